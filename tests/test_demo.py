"""The demo writes every artefact it promises (a few training steps; quality is the demo's job)."""

import json

import imageio.v2 as imageio
from PIL import Image

from difflab.cli.main import main


def test_demo_writes_all_outputs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3"]) == 0
    grid = Image.open(out / "samples.png")
    assert grid.size[0] > 64 and grid.mode == "RGB"
    strip = Image.open(out / "forward_process.png")
    assert strip.size[0] == 2 * strip.size[1] - 1  # 8 time columns, 4 rows (1-pixel padding)
    frames = imageio.mimread(out / "reverse_process.gif")
    assert len(frames) > 10
    assert (out / "loss.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and set(summary["files"]) >= {"samples", "forward_process", "reverse_process", "loss", "eval"}
    assert summary["eval"]["step"] == 3 and summary["eval"]["eval"]["fd"] > 0  # one evaluation, at the end
    # Running again continues the finished run: nothing is retrained, figures are rewritten.
    assert main(["demo", "--out", str(out), "--steps", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps_this_run"] == 0


def test_demo_rejects_bad_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
