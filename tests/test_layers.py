"""The layer order of ``src/difflab`` holds, and read-only commands never import the trainer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_tiny_run

SRC = Path(__file__).resolve().parents[1] / "src" / "difflab"
LAYERS = ("errors", "data", "processes", "nn", "tokenizers", "objectives", "samplers", "likelihood", "models",
          "evaluation", "training", "cli")  # each may import only itself and layers to its left


def layer_of(module: str) -> str | None:
    """'difflab.models.base' -> 'models'; None for the package root and non-difflab modules."""
    parts = module.split(".")
    return parts[1] if parts[0] == "difflab" and len(parts) > 1 else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every difflab import in a file, at module level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                                                       if node.module == "difflab"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m.startswith("difflab.")]


def test_every_source_file_belongs_to_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert packages | modules == set(LAYERS)


def test_no_module_imports_a_layer_to_its_right():
    violations = []
    for path in SRC.rglob("*.py"):
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        if own == "__init__":  # the package root re-exports the public API
            continue
        for line, module in imports_of(path):
            target = layer_of(module)
            if target in LAYERS and LAYERS.index(target) > LAYERS.index(own):
                violations.append(f"{path.relative_to(SRC)}:{line} ({own}) imports {module} ({target})")
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from difflab.training.trainer import Trainer\n")
    assert imports_of(bad) == [(2, "difflab.training.trainer")]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("layers") / "run")


READ_ONLY = [
    ["sample", "--num", "2", "--steps", "2", "--out", "{tmp}/x.png"],
    ["eval", "--metrics", "fd", "--num", "8", "--steps", "2", "--out", "{tmp}/eval", "--cache-dir", "{tmp}/cache"],
    ["tune", "--steps", "3", "--max-evals", "1"],
    ["probe", "--n-train", "200", "--n-test", "50", "--no-baselines"],
]
SCRIPT = """
import json, sys
from difflab.cli.main import main
report = []
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    report.append([argv[0], code, sorted(m for m in sys.modules if m.startswith("difflab.training"))])
print(json.dumps(report))
"""


def test_read_only_commands_do_not_import_the_trainer(run, tmp_path):
    """All four commands in one fresh interpreter; after each, no ``difflab.training`` module is loaded."""
    commands = [[a.format(tmp=tmp_path) for a in argv] + ["--checkpoint", str(run)] for argv in READ_ONLY]
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], capture_output=True, text=True,
                          check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r[0] for r in report] == ["sample", "eval", "tune", "probe"]
    assert all(code == 0 for _, code, _ in report), done.stderr
    assert all(loaded == [] for _, _, loaded in report), report


def test_networks_know_nothing_of_processes():
    offenders = [f"{path.name}:{line} imports {module}" for path in sorted((SRC / "nn").glob("*.py"))
                 for line, module in imports_of(path) if layer_of(module) == "processes"]
    assert offenders == []


def test_nothing_registers_itself_on_import():
    """Process and tokenizer kinds are explicit tables, complete without importing anything else."""
    def called_name(node: ast.AST) -> str:
        target = node.func if isinstance(node, ast.Call) else node
        return getattr(target, "id", None) or getattr(target, "attr", "")

    registrations = []  # module-level register*(...) calls and @register* decorators run at import time
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            calls = [node.value] if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) else []
            calls += getattr(node, "decorator_list", [])
            registrations += [f"{path.relative_to(SRC)}:{node.lineno}" for call in calls
                              if called_name(call).startswith("register")]
    assert registrations == []
    code = ("import difflab.processes as p, difflab.tokenizers as t, json, sys; "
            "print(json.dumps([sorted(p.PROCESSES), sorted(t.TOKENIZERS)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parents[1],
                         env={"PYTHONPATH": str(SRC.parent), "PATH": ""})
    processes, tokenizers = json.loads(out.stdout)
    assert processes == ["blurring", "dae", "gaussian", "heat"]
    assert tokenizers == ["autoencoder", "kl_vae", "patch_pca", "vq_vae"]
