"""The shape of agent/: lower folders never import the daemon, no import cycle, and only
evidence/lifecycle.py reads a clip's state (all read from the source with ast)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agent"
LOWER = ("dock", "sync", "analysis", "evidence", "notes", "mqtt", "ui", "media", "transfer")
CLIP_STATES = frozenset({"offloaded", "synced", "purged"})
LIFE_FIELDS = frozenset({"state", "recorder_deleted"})
LIFECYCLE = "agent.evidence.lifecycle"
# Readers of a bay's document (R/bay/{n}, state/bays.json), whose "state" is a bay state.
BAY_DOCUMENTS = frozenset({"agent.commands.status"})
INDEX_CALLS = frozenset({"update", "find", "change", "put"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    """Every module under agent/, parsed."""
    return {
        module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p))
        for p in sorted(AGENT.rglob("*.py"))
    }


def imported(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The agent modules `name` imports anywhere (top level, functions, TYPE_CHECKING)."""
    package = name if (AGENT.parent / name.replace(".", "/") / "__init__.py").exists() else None
    base = package or name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if node.level:
                up = base.split(".")[: len(base.split(".")) - node.level + 1]
                origin = ".".join([*up, origin] if origin else up)
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                found.add(sub if sub in known else origin)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imported(name, tree, known) for name, tree in trees.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_lower_folder_imports_the_daemon() -> None:
    edges = graph()
    lower = [m for m in edges if m.split(".")[1:2] and m.split(".")[1] in LOWER]
    assert len(lower) > 50, "the walk found the modules"
    upward = sorted(
        f"{m} imports {d}" for m in lower for d in edges[m] if d.startswith("agent.daemon")
    )
    assert upward == []


def test_the_module_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def life_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Where a module reads a clip's life fields or compares with a clip state's name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _const(node.slice) in LIFE_FIELDS:
            yield node.lineno, f"[{_const(node.slice)!r}]"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and _const(node.args[0]) in LIFE_FIELDS
        ):
            yield node.lineno, f".get({_const(node.args[0])!r})"
        elif isinstance(node, ast.Call) and _index_call(node):
            for keyword in node.keywords:
                if keyword.arg in LIFE_FIELDS:
                    yield node.lineno, f"{keyword.arg}="
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = {_const(s) for s in sides} | {
                _const(e) for s in sides if isinstance(s, ast.Tuple | ast.Set) for e in s.elts
            }
            if names & CLIP_STATES:
                yield node.lineno, "compares with " + ", ".join(sorted(names & CLIP_STATES))


def _index_call(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and node.func.attr in INDEX_CALLS


def _const(node: ast.AST) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def test_only_lifecycle_reads_a_clips_state() -> None:
    found = sorted(
        f"{name}:{line}: {what}"
        for name, tree in modules().items()
        if name != LIFECYCLE and name not in BAY_DOCUMENTS
        for line, what in life_reads(tree)
    )
    assert found == []


def test_the_state_check_sees_a_comparison() -> None:
    tree = ast.parse(
        'if r.get("state") == "synced" or r["recorder_deleted"]: pass\n'
        "index.find(device_id=d, recorder_deleted=False)\n"
        'if x in ("offloaded", "purged"): pass\n'
        'BayView(1, state="empty")\n'
    )
    assert sorted(what for _, what in life_reads(tree)) == [
        ".get('state')",
        "['recorder_deleted']",
        "compares with offloaded, purged",
        "compares with synced",
        "recorder_deleted=",
    ]


def map_entries(doc: str) -> dict[str, str]:
    """docs/ARCHITECTURE.md's "Where things are" map: each entry's names (its first column,
    e.g. `cli.py commands/`) -> its text, continuation lines included."""
    block = doc.split("## Where things are", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    names = ""
    for line in block.splitlines():
        if line.startswith("  ") and not line[2].isspace():
            names = line[:24].strip()
            entries[names] = ""
        if names:
            entries[names] += line[24:] + "\n"
    return entries


def unnamed_modules(doc: str) -> list[str]:
    """Modules under agent/ the map does not name: a module of a folder must be named in
    that folder's entry, a top-level one in an entry of its own (its file name)."""
    entries = map_entries(doc)
    missing = []
    for path in sorted(AGENT.rglob("*.py")):
        rel = path.relative_to(AGENT)
        if rel.name == "__init__.py":
            continue
        if len(rel.parts) == 1:
            found = any(rel.name in names.split() for names in entries)
        else:
            folder = f"{rel.parts[0]}/"
            text = "".join(t for names, t in entries.items() if folder in names.split())
            found = re.search(rf"(?<![\w.]){re.escape(rel.stem)}(?!\w)", text) is not None
        if not found:
            missing.append(str(rel))
    return missing


def test_the_architecture_map_names_every_module() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert unnamed_modules(doc) == []
    assert "sync/worker.py" in unnamed_modules(doc.replace("  sync/ ", "  syncs/"))
    assert "durable.py" in unnamed_modules(doc.replace("  durable.py", "  durably.py"))
