"""The lifecycle diagrams: generated from EDGES, committed fresh, valid Mermaid and SVG."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credman import State, lifecycle
from credman.diagrams import (
    credential_path_mermaid,
    credential_path_svg,
    lifecycle_markdown,
    lifecycle_mermaid,
    lifecycle_svg,
    write_lifecycle_diagrams,
)

EDGES = lifecycle.EDGES
DIAGRAMS = Path(__file__).resolve().parents[2] / "diagrams"
STALE = "diagrams/{} is stale: run `credman diagram -o diagrams` and commit the result"
SVG = "{http://www.w3.org/2000/svg}"

PAIRS = [(source, edge) for edge in EDGES for source in edge.sources]
PAIR_IDS = [f"{source}-{edge.trigger}" for source, edge in PAIRS]

# A credential that was refreshed three times, twice from UPDATED: every count differs.
HISTORY: list[tuple[str | None, str, str]] = [
    (None, "CREATED", "create"),
    ("CREATED", "ACTIVE", "activate"),
    ("ACTIVE", "REFRESHING", "start_refresh"),
    ("REFRESHING", "UPDATED", "refresh_succeeded"),
    ("UPDATED", "REFRESHING", "start_refresh"),
    ("REFRESHING", "UPDATED", "refresh_succeeded"),
    ("UPDATED", "REFRESHING", "start_refresh"),
    ("REFRESHING", "UPDATED", "refresh_succeeded"),
]
TRAVERSED = {  # SVG edge id -> label drawn on it: the history steps that took it, in order
    "edge-__start__-marker-CREATED": "(1)",
    "edge-CREATED-activate-ACTIVE": "(2) activate",
    "edge-ACTIVE-start_refresh-REFRESHING": "(3) start_refresh [refreshable]",
    "edge-UPDATED-start_refresh-REFRESHING": "(5,7) start_refresh [refreshable]",
    "edge-REFRESHING-refresh_succeeded-UPDATED": "(4,6,8) refresh_succeeded",
}


def label(edge: lifecycle.Edge) -> str:
    guards = f" [{' & '.join(edge.guards)}]" if edge.guards else ""
    return f"{edge.trigger}{guards}"


def svg_id(source: str, edge: lifecycle.Edge) -> str:
    return f"edge-{source}-{edge.trigger}-{edge.dest}"


def svg_groups(svg: bytes, kind: str) -> dict[str, ET.Element]:
    """The SVG's ``<g>`` elements of one Graphviz class (node or edge), by id."""
    root = ET.fromstring(svg)  # noqa: S314 - our own Graphviz output, not untrusted input
    groups = root.iter(f"{SVG}g")
    return {g.attrib["id"]: g for g in groups if g.attrib.get("class", "").split()[:1] == [kind]}


def classes(group: ET.Element) -> list[str]:
    return group.attrib["class"].split()[1:]


def dash_attributes(group: ET.Element) -> set[str]:
    return {name for path in group.iter(f"{SVG}path") for name in path.attrib}


def text_of(group: ET.Element) -> str:
    return " ".join(t.text or "" for t in group.iter(f"{SVG}text"))


# --- a strict line grammar for the stateDiagram-v2 we emit -----------------------------------
# A subset of mermaid 11's stateDiagram lexer (stateDiagram.jison): state ids there are
# [^:\n\s\-\{]+, a transition's description is ":" then no ";" and no lone ":", "class"
# takes \w+ ids joined by commas, a "%%{" anywhere starts a directive, and keywords match
# case-insensitively, so a state may not be called "note" or "end".

ID = r"[A-Za-z][A-Za-z0-9_]*"
RESERVED = {
    "click",
    "href",
    "default",
    "note",
    "state",
    "class",
    "classdef",
    "style",
    "scale",
    "direction",
    "end",
    "acctitle",
    "accdescr",
    "hide",
    "as",
}
STATEMENTS = {
    "comment": re.compile(r"%%(?!\{).*"),
    "transition": re.compile(
        rf"(?P<source>\[\*\]|{ID}) --> (?P<dest>\[\*\]|{ID})(?: : (?P<label>[^:;#%\s][^:;#%]*))?"
    ),
    "classdef": re.compile(
        rf"classDef (?P<name>{ID}) [a-z-]+:[^,;:\s]+( [^,;:\s]+)*"
        r"(,[a-z-]+:[^,;:\s]+( [^,;:\s]+)*)*"
    ),
    "class": re.compile(rf"class (?P<ids>{ID}(?:,{ID})*) (?P<name>{ID})"),
}


def mermaid_problems(text: str) -> list[str]:
    """Every line of ``text`` that is not a statement of the grammar above, with why."""
    lines = text.split("\n")
    problems = [] if lines[0] == "stateDiagram-v2" else ["line 1: not 'stateDiagram-v2'"]
    problems += ["no final newline"] if lines[-1] != "" else []
    problems += ["a '%%{' directive"] if "%%{" in text else []
    states: set[str] = set()
    defined: set[str] = set()
    for number, line in enumerate(lines[1:-1], start=2):
        statement = line.removeprefix("    ")
        kind, match = next(
            ((kind, m) for kind, rule in STATEMENTS.items() if (m := rule.fullmatch(statement))),
            (None, None),
        )
        if match is None or line != "    " + statement or statement != statement.strip():
            problems.append(f"line {number}: not a statement: {line!r}")
            continue
        groups = [v for k, v in match.groupdict().items() if k != "label" and v is not None]
        names = [name for value in groups for name in value.split(",")]
        problems += [f"line {number}: reserved {n!r}" for n in names if n.lower() in RESERVED]
        if kind == "transition":
            states |= {match["source"], match["dest"]} - {"[*]"}
        elif kind == "classdef":
            problems += [f"line {number}: classDef twice"] if match["name"] in defined else []
            defined.add(match["name"])
        elif kind == "class":
            unknown = [s for s in match["ids"].split(",") if s not in states]
            problems += [f"line {number}: class of unknown state {s}" for s in unknown]
            problems += [f"line {number}: undefined class"] if match["name"] not in defined else []
    return problems


# --- freshness -------------------------------------------------------------------------------


def test_committed_markdown_is_fresh() -> None:
    """diagrams/lifecycle.md is exactly what the table produces now."""
    committed = (DIAGRAMS / "lifecycle.md").read_bytes().decode("utf-8")
    assert lifecycle_markdown() == committed, STALE.format("lifecycle.md")


def test_committed_svg_is_fresh() -> None:
    """diagrams/lifecycle.svg is byte for byte what the table produces now."""
    committed = (DIAGRAMS / "lifecycle.svg").read_bytes()
    assert lifecycle_svg() == committed, STALE.format("lifecycle.svg")


def test_write_lifecycle_diagrams_writes_both_files(tmp_path: Path) -> None:
    """write_lifecycle_diagrams writes the Markdown and the SVG and returns their paths."""
    paths = write_lifecycle_diagrams(tmp_path / "out")
    assert [tmp_path / "out" / "lifecycle.md", tmp_path / "out" / "lifecycle.svg"] == paths
    assert [lifecycle_markdown().encode(), lifecycle_svg()] == [p.read_bytes() for p in paths]


# --- the lifecycle in Mermaid ----------------------------------------------------------------


@pytest.mark.parametrize(("source", "edge"), PAIRS, ids=PAIR_IDS)
def test_mermaid_has_every_edge(source: State, edge: lifecycle.Edge) -> None:
    """Each (source, dest, trigger) of EDGES is an arrow labelled with trigger and guards."""
    assert f"    {source} --> {edge.dest} : {label(edge)}" in lifecycle_mermaid().splitlines()


def test_mermaid_has_no_other_arrows() -> None:
    """The Mermaid arrows are the table's, plus the start and end markers, and no more."""
    arrows = [line for line in lifecycle_mermaid().splitlines() if " --> " in line]
    assert len(PAIRS) + 2 == len(arrows)


def test_mermaid_starts_at_created_and_ends_at_revoked() -> None:
    """The start marker leads to CREATED and REVOKED leads to the end marker."""
    lines = lifecycle_mermaid().splitlines()
    assert [True, True] == ["    [*] --> CREATED" in lines, "    REVOKED --> [*]" in lines]


def test_mermaid_classes_states_by_meaning() -> None:
    """States are styled by what they mean: REVOKED terminal, EXPIRED an error, ACTIVE and
    UPDATED healthy, REFRESHING working, CREATED the start."""
    lines = lifecycle_mermaid().splitlines()
    assert [
        "    class CREATED start",
        "    class ACTIVE,UPDATED healthy",
        "    class REFRESHING working",
        "    class EXPIRED error",
        "    class REVOKED terminal",
    ] == [line for line in lines if line.startswith("    class ")]


def test_lifecycle_mermaid_follows_the_grammar() -> None:
    """Every line of the lifecycle diagram is a valid stateDiagram-v2 statement."""
    assert [] == mermaid_problems(lifecycle_mermaid())


@pytest.mark.parametrize(
    "line",
    [
        "    A -> B",
        "    A --> B : a: b",
        "    A --> B : a; b",
        "    A --> B :",
        "    A-B --> C",
        "    note --> A",
        "    A:::error",
        "    class A",
        "    class A missing",
        "    classDef x fill:#fff;",
        "    %%{init: {}}%%",
        "\tA --> B",
    ],
)
def test_grammar_check_rejects_bad_statements(line: str) -> None:
    """The check rejects lines outside the subset we emit (mermaid rejects or misreads most)."""
    text = "stateDiagram-v2\n    A --> B : go\n" + line + "\n"
    assert mermaid_problems(text) != []


@pytest.mark.skipif(
    not (os.environ.get("CREDMAN_MERMAID_NODE_MODULES") and shutil.which("node")),
    reason="set CREDMAN_MERMAID_NODE_MODULES to a node_modules with mermaid and jsdom",
)
def test_real_mermaid_parses_the_diagrams(tmp_path: Path) -> None:
    """mermaid itself (under Node.js) parses both diagrams and sees every state and class."""
    script = tmp_path / "check.mjs"
    script.write_text(MERMAID_CHECK, encoding="utf-8")
    (tmp_path / "life.mmd").write_text(lifecycle_mermaid(), encoding="utf-8")
    (tmp_path / "path.mmd").write_text(credential_path_mermaid("c", HISTORY, "UPDATED"), "utf-8")
    (tmp_path / "node_modules").symlink_to(Path(os.environ["CREDMAN_MERMAID_NODE_MODULES"]))
    result = subprocess.run(
        ["node", str(script), "life.mmd", "path.mmd"],  # noqa: S607
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ("OK 6 20\nOK 6 20\n", 0) == (result.stdout, result.returncode), result.stderr


MERMAID_CHECK = """
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window; globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, 'utf8');
  await mermaid.parse(text);
  const { db } = await mermaid.mermaidAPI.getDiagramFromText(text);
  const states = [...db.getStates().values()].filter((s) => !s.id.startsWith('root_'));
  const styled = states.filter((s) => s.classes.length > 0);
  console.log(styled.length === 0 ? 'UNSTYLED' : 'OK', states.length, db.getRelations().length);
}
"""


# --- the lifecycle in SVG --------------------------------------------------------------------


def test_svg_has_a_node_per_state() -> None:
    """The SVG parses as XML and has one node per state, the start and end markers and the
    legend."""
    nodes = svg_groups(lifecycle_svg(), "node")
    expected = {f"state-{s}" for s in State} | {"state-start", "state-end", "legend"}
    assert expected == set(nodes)


def test_svg_node_titles_are_the_state_names() -> None:
    """Each state's node is titled with the state's name."""
    nodes = svg_groups(lifecycle_svg(), "node")
    titles = {nodes[f"state-{s}"].findtext(f"{SVG}title") for s in State}
    assert set(State) == titles


@pytest.mark.parametrize(("source", "edge"), PAIRS, ids=PAIR_IDS)
def test_svg_has_every_edge(source: State, edge: lifecycle.Edge) -> None:
    """Each (source, dest, trigger) of EDGES is its own SVG edge, labelled like the Mermaid."""
    group = svg_groups(lifecycle_svg(), "edge")[svg_id(source, edge)]
    title = group.findtext(f"{SVG}title")
    assert (f"{source}->{edge.dest}", label(edge)) == (title, text_of(group))


def test_svg_has_no_other_edges() -> None:
    """The SVG's edges are the table's, plus the start and end markers, and no more."""
    assert len(PAIRS) + 2 == len(svg_groups(lifecycle_svg(), "edge"))


def test_svg_styles_states_by_meaning() -> None:
    """In the SVG too each state carries the class of its meaning; healthy is not red."""
    nodes = svg_groups(lifecycle_svg(), "node")
    styled = {name: classes(group) for name, group in nodes.items() if classes(group)}
    assert {
        "state-CREATED": ["start"],
        "state-ACTIVE": ["healthy"],
        "state-UPDATED": ["healthy"],
        "state-REFRESHING": ["working"],
        "state-EXPIRED": ["error"],
        "state-REVOKED": ["terminal"],
    } == styled


def test_svg_fits_a_readme_and_has_a_legend() -> None:
    """The lifecycle SVG is laid out top-down, at most 600 pt (800 px) wide, with a legend."""
    root = ET.fromstring(lifecycle_svg())  # noqa: S314 - our own Graphviz output
    width, height = (float(root.get(name, "0").removesuffix("pt")) for name in ("width", "height"))
    legend = svg_groups(lifecycle_svg(), "node")["legend"]
    assert (True, True, True) == (width <= 600, height > width * 0.8, "healthy" in text_of(legend))


def test_refreshing_and_updated_edges_differ_in_colour() -> None:
    """The three edges between REFRESHING and UPDATED are drawn in three different colours."""
    edges = svg_groups(lifecycle_svg(), "edge")
    ids = [
        "edge-REFRESHING-refresh_succeeded-UPDATED",
        "edge-UPDATED-start_refresh-REFRESHING",
        "edge-REFRESHING-update-UPDATED",
    ]
    colours = {edges[i].find(f"{SVG}path").get("stroke") for i in ids}
    assert 3 == len(colours)


def test_rendering_prints_no_fontconfig_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """Drawing an SVG leaves nothing on stderr (the bundled fontconfig's warnings are dropped)."""
    lifecycle_svg()
    assert "" == capfd.readouterr().err


def test_svg_names_no_graphviz_version() -> None:
    """The generator comment, which names the Graphviz build, is stripped."""
    assert b"Generated by graphviz" not in lifecycle_svg()


# --- one credential's path -------------------------------------------------------------------


def test_path_svg_marks_exactly_the_traversed_edges() -> None:
    """Only the edges in the history are marked traversed, labelled with their step numbers."""
    edges = svg_groups(credential_path_svg("c1", HISTORY, "UPDATED"), "edge")
    traversed = {i: text_of(g) for i, g in edges.items() if classes(g) == ["traversed"]}
    assert TRAVERSED == traversed


def test_path_svg_draws_the_other_edges_dashed() -> None:
    """Every edge not in the history is classed untraversed and drawn dashed."""
    edges = svg_groups(credential_path_svg("c1", HISTORY, "UPDATED"), "edge")
    untraversed = {i for i, g in edges.items() if classes(g) == ["untraversed"]}
    dashed = {i for i, g in edges.items() if "stroke-dasharray" in dash_attributes(g)}
    every = {svg_id(source, edge) for source, edge in PAIRS} | {"edge-REVOKED-marker-__end__"}
    expected = every - set(TRAVERSED)
    assert [expected, expected] == [untraversed, dashed]


def test_path_svg_highlights_the_current_state() -> None:
    """The current state alone is classed current; the other visited states are visited."""
    nodes = svg_groups(credential_path_svg("c1", HISTORY, "UPDATED"), "node")
    by_class = {
        c: sorted(i for i, g in nodes.items() if classes(g) == [c])
        for c in ("current", "visited", "unvisited")
    }
    assert {
        "current": ["state-UPDATED"],
        "visited": ["state-ACTIVE", "state-CREATED", "state-REFRESHING"],
        "unvisited": ["state-EXPIRED", "state-REVOKED"],
    } == by_class


def test_path_svg_is_deterministic() -> None:
    """The same history gives the same bytes."""
    assert credential_path_svg("c1", HISTORY, "UPDATED") == credential_path_svg(
        "c1", HISTORY, "UPDATED"
    )


def test_path_mermaid_marks_exactly_the_traversed_edges() -> None:
    """Only the history's arrows carry a check mark, with the numbers of their steps."""
    lines = credential_path_mermaid("c1", HISTORY, "UPDATED").splitlines()
    assert [
        "    [*] --> CREATED : ✔ (1)",
        "    CREATED --> ACTIVE : ✔ (2) activate",
        "    ACTIVE --> REFRESHING : ✔ (3) start_refresh [refreshable]",
        "    UPDATED --> REFRESHING : ✔ (5,7) start_refresh [refreshable]",
        "    REFRESHING --> UPDATED : ✔ (4,6,8) refresh_succeeded",
    ] == [line for line in lines if "✔" in line and " --> " in line]


def test_path_mermaid_classes_current_visited_and_unvisited() -> None:
    """The current state, the other visited ones and the rest each get their class."""
    lines = credential_path_mermaid("c1", HISTORY, "UPDATED").splitlines()
    assert [
        "    class UPDATED current",
        "    class CREATED,ACTIVE,REFRESHING visited",
        "    class EXPIRED,REVOKED unvisited",
    ] == [line for line in lines if line.startswith("    class ")]


def test_path_mermaid_draws_every_state_and_edge() -> None:
    """The path diagram draws the whole lifecycle, not only the path."""
    mermaid = credential_path_mermaid("c1", HISTORY[:2], "ACTIVE")
    arrows = [line.split(" : ")[0] for line in mermaid.splitlines() if " --> " in line]
    expected = [
        line.split(" : ")[0] for line in lifecycle_mermaid().splitlines() if " --> " in line
    ]
    assert expected == arrows


def test_path_mermaid_follows_the_grammar() -> None:
    """The path diagram, off-table steps included, is valid stateDiagram-v2."""
    steps = [*HISTORY, ("UPDATED", "ACTIVE", "bogus"), (None, "ACTIVE", "import")]
    assert [] == mermaid_problems(credential_path_mermaid("c1", steps, "ACTIVE"))


def test_path_draws_a_step_the_table_does_not_have() -> None:
    """A history row with no edge in the table is drawn, marked as not in the table."""
    steps = [*HISTORY, ("UPDATED", "ACTIVE", "bogus")]
    edges = svg_groups(credential_path_svg("c1", steps, "ACTIVE"), "edge")
    group = edges["edge-UPDATED-bogus-ACTIVE"]
    mermaid = credential_path_mermaid("c1", steps, "ACTIVE").splitlines()
    assert (["off_table"], "(9) bogus (not in table)", True) == (
        classes(group),
        text_of(group),
        "    UPDATED --> ACTIVE : ✔ (9) bogus (not in table)" in mermaid,
    )


def test_path_without_history_highlights_only_the_current_state() -> None:
    """With no history nothing is traversed or visited; the current state is still marked."""
    svg = credential_path_svg("c1", [], "CREATED")
    edges, nodes = svg_groups(svg, "edge"), svg_groups(svg, "node")
    traversed = [i for i, g in edges.items() if classes(g) == ["traversed"]]
    marked = {i: classes(g) for i, g in nodes.items() if classes(g) not in ([], ["unvisited"])}
    assert ([], {"state-CREATED": ["current"]}) == (traversed, marked)


@pytest.mark.parametrize(
    ("steps", "current", "message"),
    [
        ([("ACTIVE", "DELETED", "delete")], "ACTIVE", "'DELETED' is not a lifecycle state"),
        ([("active", "UPDATED", "update")], "UPDATED", "'active' is not a lifecycle state"),
        ([], "GONE", "'GONE' is not a lifecycle state"),
        ([("ACTIVE", "UPDATED", "update\nclass X y")], "UPDATED", "is not a name"),
        ([("ACTIVE", "UPDATED", "a : b")], "UPDATED", "is not a name"),
    ],
)
def test_path_rejects_rows_it_cannot_draw(
    steps: list[tuple[str | None, str, str]], current: str, message: str
) -> None:
    """Unknown states and triggers that are not names raise, naming the problem."""
    with pytest.raises(ValueError, match=re.escape(message)):
        credential_path_mermaid("c1", steps, current)


def test_path_keeps_a_hostile_id_out_of_the_statements() -> None:
    """A credential id cannot open a directive or start a new line in the Mermaid."""
    mermaid = credential_path_mermaid("x%%{init: {}}%%\nA --> B", HISTORY, "UPDATED")
    assert [] == mermaid_problems(mermaid)


WALK_STEP = st.integers(min_value=0, max_value=100)


@settings(max_examples=60, deadline=None)
@given(st.lists(WALK_STEP, max_size=25))
def test_path_counts_match_any_walk(choices: list[int]) -> None:
    """For any walk through the table, each arrow's mark and step numbers equal the walk's."""
    state, steps = State.CREATED, [(None, "CREATED", "create")]
    for choice in choices:
        options = [edge for edge in EDGES if state in edge.sources]
        if not options:
            break
        edge = options[choice % len(options)]
        steps.append((state, edge.dest, edge.trigger))
        state = edge.dest
    walked: dict[tuple[str, str, str], list[int]] = {}
    for number, (s, d, t) in enumerate(steps, start=1):
        if s is not None:
            walked.setdefault((s, d, t), []).append(number)

    def numbered(numbers: list[int]) -> str:
        if len(numbers) <= 4:
            return f"({','.join(map(str, numbers))})"
        return f"({','.join(map(str, numbers[:4]))}…{numbers[-1]})"

    expected = sorted(
        [
            "    [*] --> CREATED : ✔ (1)",
            *(
                f"    {s} --> {d} : ✔ {numbered(n)} "
                f"{label(next(e for e in EDGES if e.trigger == t))}"
                + (f" ×{len(n)}" if len(n) > 4 else "")
                for (s, d, t), n in walked.items()
            ),
        ]
    )
    lines = credential_path_mermaid("c1", steps, state).splitlines()
    marked = sorted(line for line in lines if " --> " in line and "✔" in line)
    assert expected == marked
