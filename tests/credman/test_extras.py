"""Optional extras: without them credman imports and works; the feature that needs one
raises a CredentialError naming the extra to install."""

from __future__ import annotations

import sys

import pytest

from credman import CredentialError, CredentialManager
from credman.diagrams import lifecycle_mermaid, lifecycle_svg
from credman.testing import time_machine


def test_time_machine_without_freezegun_names_the_testing_extra(
    monkeypatch: pytest.MonkeyPatch, manager: CredentialManager
) -> None:
    """No freezegun: time_machine refuses with "pip install 'credman[testing]'"."""
    monkeypatch.setitem(sys.modules, "freezegun", None)
    with pytest.raises(CredentialError) as raised, time_machine(manager):
        pass
    assert "pip install 'credman[testing]'" in str(raised.value)


def test_svg_without_pygraphviz_names_the_diagrams_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pygraphviz: SVG refuses with "pip install 'credman[diagrams]'"; Mermaid still works."""
    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    with pytest.raises(CredentialError) as raised:
        lifecycle_svg()
    assert "pip install 'credman[diagrams]'" in str(raised.value)
    assert lifecycle_mermaid().startswith("stateDiagram-v2")
