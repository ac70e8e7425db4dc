"""The layout holds: dependencies point one way, no import cycles, one training and one evaluation entry
point per learned stage (read from the source, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cli.learned import LEARNED_STAGES
from tests.helpers import PROJECT_ROOT

PACKAGES = ("pipeline", "stages", "training", "evaluation", "cli", "bench", "synth")
# package -> project packages it must never import (engine <- stages <- training/evaluation <- cli/bench)
FORBIDDEN = {
    "pipeline": ("training", "evaluation", "cli", "bench"),
    "stages": ("training", "evaluation", "cli", "bench"),
    "training": ("cli", "bench"),
    "evaluation": ("cli", "bench"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if p.name != "__main__.py"
    }


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules a file imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in modules else node.module for n in names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_dependencies_point_one_way():
    wrong = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target in graph and target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_one_training_and_one_evaluation_entry_point_per_learned_stage():
    for package in ("training", "evaluation"):
        for stage in LEARNED_STAGES:
            path = PROJECT_ROOT / package / f"{stage}.py"
            assert path.is_file(), f"missing {package}/{stage}.py"
            tree = ast.parse(path.read_text())
            mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
            assert mains and [a.arg for a in mains[0].args.args] == ["argv"], f"{package}/{stage}.py: main(argv)"
    # learned stages train and evaluate only there: no train/evaluate modules left beside the stages
    leftovers = sorted(str(p.relative_to(PROJECT_ROOT)) for name in ("train.py", "evaluate.py")
                       for p in (PROJECT_ROOT / "stages").rglob(name))
    assert not leftovers, leftovers


def test_train_and_eval_verbs_reach_every_learned_stage(capsys):
    from cli.main import main

    for verb, package in (("train", "training"), ("eval", "evaluation")):
        assert main([verb, "list"]) == 0
        listed = capsys.readouterr().out
        assert all(stage in listed for stage in LEARNED_STAGES)
        for stage in LEARNED_STAGES:
            with pytest.raises(SystemExit) as stop:  # argparse's --help exits 0 after printing usage
                main([verb, stage, "--help"])
            assert stop.value.code == 0
            assert f"python -m {package}.{stage}" in capsys.readouterr().out
        assert main([verb, "no_such_stage"]) == 2
        assert "unknown stage" in capsys.readouterr().err
