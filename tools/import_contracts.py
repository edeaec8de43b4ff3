"""An import-linter contract type the built-in ones lack: no import cycle anywhere in a package.

import-linter's ``acyclic_siblings`` compares siblings (as packages), so it misses a package
``__init__`` and one of its own modules importing each other (``cli`` <-> ``cli.keys``). This
contract checks every module against every other, ``TYPE_CHECKING`` imports included (the
session's default): each strongly connected group of modules is one broken cycle, reported
as a concrete loop with the line of each import.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output

__all__ = ["AcyclicContract"]


class AcyclicContract(Contract):
    """Options: ``packages``, the packages none of whose modules may take part in a cycle."""

    type_name = "acyclic"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        modules = {m for m in graph.modules if _inside(m, self.packages)}  # type: ignore[arg-type]
        edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
        cycles = [
            {
                "modules": group,
                "loop": [_step(graph, a, b) for a, b in pairwise(_loop(edges, group))],
            }
            for group in _cycles(edges)
        ]
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"{len(cycle['modules'])} modules import each other in a cycle:")
            output.print_error(", ".join(cycle["modules"]), bold=False)
            output.print_error("for example:", bold=False)
            for step in cycle["loop"]:
                output.indent_cursor()
                output.print_error(step, bold=False)
            output.new_line()


def _inside(module: str, packages: list[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(root: str) -> None:  # iterative Tarjan: a deep import chain cannot overflow
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == module:
                            break
                    if len(group) > 1 or module in edges[module]:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[module] = min(low[module], index[child])

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(groups)


def _loop(edges: dict[str, set[str]], group: list[str]) -> list[str]:
    """The shortest loop from the group's first module back to it, inside the group."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for child in sorted(edges[module] & members):
            if child == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = module
                queue.append(child)
    return [start, start]  # unreachable for a real group: it is strongly connected


def _step(graph: ImportGraph, importer: str, imported: str) -> str:
    lines = sorted(
        {d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)}
    )
    where = f" (l.{', '.join(map(str, lines))})" if lines else ""
    return f"{importer} -> {imported}{where}"
