"""Every finding and alert code the code base emits, read from its source (ast), for the i18n test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE_RE = re.compile(r"[a-z][a-z0-9_]*")
FINDING_CALLS = {"fault", "warning", "info", "Finding", "BayFault", "BayWaiting"}


def _name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and func.value.id in ("logger", "logging", "warnings"):
            return None  # logger.warning("...") is a log line, not a finding
        return func.attr
    return None


def _codes(call: ast.Call, consts: dict[str, str]) -> set[str]:
    """The code argument (the first; BayFault/BayWaiting take the bay first), literal or constant."""
    position = 1 if _name(call) in ("BayFault", "BayWaiting") else 0
    arg = next((kw.value for kw in call.keywords if kw.arg == "code"), None)
    if arg is None and len(call.args) > position:
        arg = call.args[position]
    return {c for c in _values(arg, consts) if CODE_RE.fullmatch(c)}


def _values(arg: ast.expr | None, consts: dict[str, str]) -> set[str]:
    """The strings an argument can be: a literal, a module constant, either branch of an if."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.Name) and arg.id in consts:
        return {consts[arg.id]}
    if isinstance(arg, ast.IfExp):
        return _values(arg.body, consts) | _values(arg.orelse, consts)
    return set()  # forwarded (exc.code, item.code): its origin is scanned where it is made


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" assignments."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _kind(call: ast.Call) -> str | None:
    name = _name(call)
    if name in FINDING_CALLS or (name and name.endswith("Error")):
        return "finding"
    if name == "__init__" and isinstance(call.func, ast.Attribute):
        inner = call.func.value  # super().__init__("code", message) in a RecorderError subclass
        if isinstance(inner, ast.Call) and _name(inner) == "super":
            return "finding"
    if name == "alert":
        return "alert"
    return None


def _table_codes(tree: ast.Module) -> set[str]:
    """Codes in module-level tables such as FAILURES = {2: ("code", "message"), ...}."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for value in node.value.values:
                if isinstance(value, ast.Tuple) and len(value.elts) >= 2:
                    code, words = value.elts[0], value.elts[1]
                    if (
                        isinstance(code, ast.Constant)
                        and isinstance(code.value, str)
                        and CODE_RE.fullmatch(code.value)
                        and isinstance(words, ast.Constant | ast.JoinedStr)
                    ):
                        found.add(code.value)
    return found


def emitted_codes(
    packages: tuple[str, ...] = ("agent", "firmware_interface"),
) -> dict[str, set[str]]:
    """{"finding": codes, "alert": codes} with a literal code in the given packages."""
    found: dict[str, set[str]] = {"finding": set(), "alert": set()}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            consts = _constants(tree)
            found["finding"] |= _table_codes(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and (kind := _kind(node)):
                    found[kind] |= _codes(node, consts)
    return found
