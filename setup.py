"""Which packages the distribution holds: every package under credman/, and the concern
folders (lifecycle/, storage/, crypto/, scheduler/) installed as credman subpackages.

pyproject.toml cannot say both (a ``packages.find`` names packages after their folders), so
the list is computed here; everything else about the build lives in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

CONCERNS = ("lifecycle", "storage", "crypto", "scheduler")
"""Top-level folders that install as ``credman.<folder>``."""
SKIP = ["*__pycache__", "*__pycache__.*"]


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = ["credman", *find_namespace_packages(include=["credman.*"], exclude=SKIP)]
    package_dir = {"credman": "credman"}
    for folder in CONCERNS:
        name = f"credman.{folder}"
        package_dir[name] = folder
        packages += [name, *(f"{name}.{p}" for p in find_namespace_packages(folder, exclude=SKIP))]
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
