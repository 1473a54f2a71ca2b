"""Issue 12: ``difflab sample --precision/--compile``: the options a device lacks warn in one
line and sample on the plain path; a compiled denoiser draws the eager samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny_run

from difflab.cli.main import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny") / "run")


def samples(path: Path) -> np.ndarray:
    with np.load(path) as f:
        return f[f.files[0]]


def test_fp16_on_a_cpu_warns_in_one_line_and_samples_in_fp32(tiny_run, tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert main(["sample", "--checkpoint", str(tiny_run), "--num", "4", "--steps", "3",
                 "--out", str(tmp_path / "a/g.png"), "--npz", str(tmp_path / "a/s.npz"), "--precision", "fp16"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert warning == ["difflab sample: warning: --precision='fp16' needs a GPU (CUDA); using fp32 on cpu"]
    assert "fp32" in captured.out
    assert main(["sample", "--checkpoint", str(tiny_run), "--num", "4", "--steps", "3",
                 "--out", str(tmp_path / "b/g.png"), "--npz", str(tmp_path / "b/s.npz"), "--precision", "no"]) == 0
    assert np.array_equal(samples(tmp_path / "a/s.npz"), samples(tmp_path / "b/s.npz"))


def test_bad_precision_exits_2(tiny_run, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["sample", "--checkpoint", str(tiny_run), "--precision", "fp8", "--out", str(tmp_path / "g.png")])
    assert err.value.code == 2 and not (tmp_path / "g.png").exists()


@pytest.mark.slow
def test_compiled_denoiser_draws_the_eager_samples(tiny_run, tmp_path):
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        (tmp_path / name).mkdir()
        assert main(["sample", "--checkpoint", str(tiny_run), "--num", "4", "--steps", "3",
                     "--out", str(tmp_path / name / "g.png"), "--npz", str(tmp_path / name / "s.npz"), *extra]) == 0
    eager, compiled = samples(tmp_path / "eager/s.npz"), samples(tmp_path / "compiled/s.npz")
    assert np.abs(eager.astype(float) - compiled.astype(float)).max() <= 1  # 8-bit levels: fusion may round one level
