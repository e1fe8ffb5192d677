"""Import direction between rsdata's packages (issue 9): shared helpers live in the layer below.

Every module under ``rsdata/`` is parsed with :mod:`ast`; every ``import`` / ``from ... import``
counts, at module level or inside a function or class (lazy imports are still dependencies).
Edges are kept at package level: ``rsdata.X`` for a subpackage or top-level module X.
Plugin registries that name a module in a string (``STAGES``, ``SOURCES``, ``SCORERS``) are
lookups by name, not imports, and are not edges.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import rsdata

ROOT = Path(rsdata.__file__).resolve().parent
Where = tuple[str, int]  # (file relative to the repository, line)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """``rsdata.scoring.stage`` -> ``rsdata.scoring``; ``rsdata`` stays ``rsdata``."""
    return ".".join(module.split(".")[:2])


def _is_unit(name: str) -> bool:
    """Whether ``rsdata.<name>`` is a subpackage or a top-level module."""
    return (ROOT / name / "__init__.py").is_file() or (ROOT / f"{name}.py").is_file()


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names of the rsdata modules an import statement pulls in."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "rsdata" or a.name.startswith("rsdata.")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target != "rsdata" and not target.startswith("rsdata."):
        return []
    if target == "rsdata":  # ``from rsdata import corpus`` imports the subpackage
        return [f"rsdata.{a.name}" if _is_unit(a.name) else "rsdata" for a in node.names]
    return [target]


def import_graph() -> dict[str, dict[str, list[Where]]]:
    """unit -> imported unit -> where (file, line) each import is."""
    graph: dict[str, dict[str, list[Where]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, module, path.name == "__init__.py"):
                src, dst = _unit(module), _unit(target)
                if src != dst:
                    graph[src][dst].append((str(path.relative_to(ROOT.parent)), node.lineno))
    return graph


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, list[Where]]]:
    return import_graph()


def _edge(graph: dict[str, dict[str, list[Where]]], src: str, dst: str) -> list[str]:
    return [f"{f}:{line}" for f, line in graph.get(f"rsdata.{src}", {}).get(f"rsdata.{dst}", [])]


def test_the_parser_sees_lazy_and_relative_imports(graph: dict[str, dict[str, list[Where]]]) -> None:
    # rsdata.commands imports the train and evaluate packages only inside functions
    assert _edge(graph, "commands", "train") and _edge(graph, "commands", "evaluate")
    assert _edge(graph, "executors", "corpus")
    mod = "rsdata.x.y"
    rel = ast.parse("from ..corpus import reader\nfrom . import z\nfrom .w import v").body
    assert [_imported(n, mod, False) for n in rel] == [["rsdata.corpus"], ["rsdata.x"], ["rsdata.x.w"]]
    assert _imported(ast.parse("from rsdata import corpus").body[0], mod, False) == ["rsdata.corpus"]


def test_scoring_does_not_import_filtering(graph: dict[str, dict[str, list[Where]]]) -> None:
    """One direction only: filtering may use scoring, never the reverse (image decoding, which
    both use, lives in rsdata.imaging)."""
    assert not _edge(graph, "scoring", "filtering"), _edge(graph, "scoring", "filtering")


def test_evaluate_does_not_import_train(graph: dict[str, dict[str, list[Where]]]) -> None:
    """What both read (shards, captions, the holdout split) lives in rsdata.corpus.samples."""
    assert not _edge(graph, "evaluate", "train"), _edge(graph, "evaluate", "train")


def test_inspect_does_not_import_llm(graph: dict[str, dict[str, list[Where]]]) -> None:
    """The LLM report section lives in rsdata.reports.llm_section."""
    assert not _edge(graph, "inspect", "llm"), _edge(graph, "inspect", "llm")


@pytest.mark.parametrize("upper", ["train", "evaluate", "scoring", "filtering", "llm", "osm",
                                   "captions", "executors"])
def test_corpus_sits_below_the_stage_and_tool_packages(
        graph: dict[str, dict[str, list[Where]]], upper: str) -> None:
    assert not _edge(graph, "corpus", upper), _edge(graph, "corpus", upper)


def test_sources_do_not_import_executors(graph: dict[str, dict[str, list[Where]]]) -> None:
    assert not _edge(graph, "sources", "executors"), _edge(graph, "sources", "executors")


def test_no_package_cycles(graph: dict[str, dict[str, list[Where]]]) -> None:
    """No two packages import each other, directly or through others (the package root
    ``rsdata``, which holds only the version and re-exports, is left out)."""
    edges = {src: {dst for dst in dsts if dst != "rsdata"} for src, dsts in graph.items() if src != "rsdata"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            where = {f"{a} -> {b}": _edge(graph, a[7:], b[7:]) for a, b in zip(cycle, cycle[1:])}
            pytest.fail(f"import cycle {' -> '.join(cycle)}: {where}")
