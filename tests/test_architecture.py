"""The code's shape: functions small enough to read, packages without import circles, backends
named only inside backends/, and no module that points at files outside the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "segdeploy"
MAX_LINES = 100
MAX_PARAMETERS = 10


def _functions():
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(SRC.parent), node


def _parameters(node) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def _offenders() -> list[str]:
    found = []
    for path, node in _functions():
        lines = node.end_lineno - node.lineno + 1
        params = _parameters(node)
        if lines > MAX_LINES or params > MAX_PARAMETERS:
            found.append(f"{path}:{node.lineno} {node.name} ({lines} lines, {params} parameters)")
    return found


def test_the_size_check_sees_long_and_wide_functions():
    tree = ast.parse("def f(a, b, c, d, e, f, g, h, i, j, k):\n" + "    x = 1\n" * 120)
    node = tree.body[0]
    assert _parameters(node) == 11 and node.end_lineno - node.lineno + 1 == 121
    method = ast.parse("def m(self, a, *rest, **more): pass").body[0]
    assert _parameters(method) == 3


def test_no_function_is_longer_than_100_lines_or_takes_more_than_10_parameters():
    offenders = _offenders()
    assert not offenders, f"{len(offenders)} function(s) over the limits:\n" + "\n".join(offenders)


def test_no_import_circles_inside_report_and_data():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("segdeploy")
    circles = []
    for package in ("segdeploy.report", "segdeploy.data"):
        modules = [m for m in graph.modules if m.startswith(package + ".")]
        for importer in modules:
            for imported in graph.find_modules_directly_imported_by(importer):
                if imported.startswith(package + ".") and graph.find_shortest_chain(importer=imported,
                                                                                    imported=importer):
                    circles.append(f"{importer} -> {imported}")
    assert not circles


# What "compares a backend name" looks like: `backend == "x"`, `!= "torch"`, a tuple of names.
_NAME_CHECK = re.compile(r'(backend|runtime\.name)\s*(==|!=)\s*"(?!auto")|(==|!=)\s*"(torch|onnxruntime|openvino)"'
                         r'|backend\s+(not\s+)?in\s+\(')


def test_no_backend_name_is_compared_outside_backends():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "backends"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _NAME_CHECK.search(line):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_nothing_points_at_files_outside_the_repository():
    stale = re.compile(r"segdeploy/commands/|\bDESIGN\.md|\bMODELS\.md|\bPERFORMANCE\.md")
    texts = [*SRC.rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in texts for m in stale.finditer(p.read_text())]
    assert not found
