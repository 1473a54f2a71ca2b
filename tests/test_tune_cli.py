"""``difflab tune`` on a tiny checkpoint, and ``sample``/``eval`` picking the tuned grid up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_RUN, train_tiny_run

from difflab.cli.main import main
from difflab.models import load_model
from difflab.models import (
    model_dir as resolve_checkpoint,  # the model directory, where tuned_grids.json lives
)

FILENAME = "tuned_grids.json"


def load_tuned_grids(path: Path, ema: bool = True):
    """The tuned grids ``load_model`` attaches to the EMA (or raw) weights saved at ``path``."""
    return load_model(path, ema=ema).tuned_grids


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory) -> Path:
    """A 2-step digits run whose EMA weights got a tuned 3-step dpmpp_2m grid."""
    out = train_tiny_run(tmp_path_factory.mktemp("tune") / "run")
    assert main(["tune", "--checkpoint", str(out), "--steps", "3", "--sampler", "dpmpp_2m", "--max-evals", "5"]) == 0
    return out


def test_tune_writes_grids_for_the_ema_weights_only(tuned_run: Path, capsys) -> None:
    directory = resolve_checkpoint(tuned_run)
    table = load_tuned_grids(directory, ema=True)
    assert table is not None and [(g.sampler, g.steps) for g in table.grids] == [("dpmpp_2m", 3)]
    grid = table.get("dpmpp_2m", 3)
    assert grid.times[0] == 1.0 and grid.times[-1] == 0.0 and len(grid.times) == 4
    assert grid.rel_mse <= grid.rel_mse_start
    assert load_tuned_grids(directory, ema=False) is None  # the raw weights differ: never used for them
    assert json.loads((directory / FILENAME).read_text())["format"] == "difflab-tuned-grids"


@pytest.mark.parametrize(("argv", "grid"), [
    (["--steps", "3"], "tuned"),
    (["--steps", "4"], "logsnr"),  # no tuned grid for 4 steps: the process's auto grid
    (["--steps", "3", "--grid", "karras"], "karras"),
    (["--steps", "3", "--no-ema"], "logsnr"),
])
def test_sample_uses_the_tuned_grid_when_there_is_one(tuned_run: Path, tmp_path: Path, capsys, argv, grid) -> None:
    code = main(["sample", "--checkpoint", str(tuned_run), "--sampler", "dpmpp_2m", "--num", "2",
                 "--out", str(tmp_path / "s.png"), *argv])
    assert code == 0
    assert f"on the {grid} grid" in capsys.readouterr().out


def test_eval_records_the_tuned_grid(tuned_run: Path, tmp_path: Path) -> None:
    code = main(["eval", "--checkpoint", str(tuned_run), "--metrics", "fd", "--sampler", "dpmpp_2m",
                 "--steps", "3", "--num", "8", "--out", str(tmp_path / "eval"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    (row,) = json.loads((tmp_path / "eval" / "eval.json").read_text())["rows"]
    assert row["protocol"]["grid"] == "tuned"


@pytest.mark.parametrize(("argv", "message"), [
    (["--steps", "2"], "at least 3 steps"),
    (["--steps", "5", "--sampler", "ancestral"], "deterministic ODE sampler"),
    (["--steps", "5", "--max-evals", "0"], "--max-evals"),
    (["--steps", "5", "--sampler", "nope"], "sampler='nope'"),
])
def test_tune_rejects_bad_arguments(tuned_run: Path, capsys, argv, message) -> None:
    before = (resolve_checkpoint(tuned_run) / FILENAME).read_bytes()
    assert main(["tune", "--checkpoint", str(tuned_run), *argv]) == 2
    assert message in capsys.readouterr().err
    assert (resolve_checkpoint(tuned_run) / FILENAME).read_bytes() == before  # nothing written


def test_sample_rejects_an_unknown_grid(tuned_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["sample", "--checkpoint", str(tuned_run), "--grid", "cosine", "--out", str(tmp_path / "x.png")]) == 2
    assert "--grid='cosine'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_training_tunes_the_final_weights_when_asked(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--config", "digits-gauss", *TINY_RUN, "run.tune_steps=[3]", f"run.out_dir={out}"])
    assert code == 0
    assert "tuned the dpmpp_2m grid for 3 steps" in capsys.readouterr().out
    table = load_tuned_grids(resolve_checkpoint(out))
    assert table is not None and table.get("dpmpp_2m", 3) is not None


def test_tune_steps_are_validated(tmp_path: Path, capsys) -> None:
    for override, message in (("run.tune_steps=[2]", "run.tune_steps[0]"),):
        assert main(["train", "--config", "digits-gauss", override, f"run.out_dir={tmp_path / 'x'}"]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["train", "--config", "mnist-ihdm", "run.tune_steps=[10]", f"run.out_dir={tmp_path / 'y'}"]) == 2
    assert "ihdm models do not use" in capsys.readouterr().err and not (tmp_path / "y").exists()
