"""``evaluate`` / ``sweep`` and the report writer on a model callable; ``difflab eval`` arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import train_tiny_run
from PIL import Image

from difflab.cli.main import main
from difflab.data import load_dataset
from difflab.errors import ConfigError
from difflab.evaluation.evaluate import check_metrics, evaluate, sweep
from difflab.evaluation.report import markdown_table, write_report
from difflab.processes import GaussianDiffusion
from difflab.processes.analytic import GaussianData


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", split="test")


def gaussian_fit(images: torch.Tensor) -> GaussianData:
    """A per-pixel Gaussian fitted to images: its exact denoiser is a cheap, fair 'model'."""
    x = images.double()
    return GaussianData(mean=x.mean(0), var=x.var(0) + 1e-2)


def test_sweep_writes_table_json_and_plot(digits_test, tmp_path: Path) -> None:
    process = GaussianDiffusion()
    model = gaussian_fit(load_dataset("digits", split="train").images).model(process)
    rows = sweep(model, process, digits_test, samplers=["ddim", "ancestral"], steps=[2, 8],
                 metrics=["fd", "kid", "is", "nll"], num_samples=200, seed=3, ema=False,
                 cache_dir=tmp_path / "cache", nll_examples=64, nll_options={"num_t": 2})
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 2), ("ddim", 8), ("ancestral", 2), ("ancestral", 8), ("-", 0)]
    for r in rows[:-1]:
        assert r["fd"] > 0 and r["nfe"] == r["steps"] and 1.0 <= r["is"] <= 10.0
        assert r["protocol_text"].startswith("n=200, seed=3, " + f"{r['sampler']} {r['steps']} steps, raw weights")
    assert 0 < rows[-1]["nll"] < 8 and rows[-1]["nll_se"] > 0  # bits/dim of 17-level data: at most log2(17)+
    paths = write_report(rows, tmp_path / "out")
    table = paths["markdown"].read_text()
    assert table.count("\n") == 2 + len(rows) and "digits/test (359 images)" in table and " ± " in table
    assert json.loads(paths["json"].read_text())["rows"][0]["protocol"]["num_samples"] == 200
    assert Image.open(paths["plot"]).size[0] > 300


def memorizer(images: torch.Tensor, process: GaussianDiffusion):
    """The exact eps-denoiser of the empirical distribution of ``images``: it samples training images."""
    data = images.double().flatten(1)  # (N, D)

    def model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = process.alpha_sigma(t.double(), tuple(z.shape))
        a, s = alpha.reshape(-1, 1), sigma.reshape(-1, 1)
        zf = z.double().flatten(1)
        logits = -(a**2) * torch.cdist(zf / a, data) ** 2 / (2 * s**2)  # -|z - a x_n|^2 / 2 s^2, (B, N)
        x0 = torch.softmax(logits, 1) @ data
        return ((zf - a * x0) / s).reshape(z.shape).to(z.dtype)

    return model


def test_evaluate_is_reproducible_and_ranks_models(digits_test, tmp_path: Path) -> None:
    process = GaussianDiffusion()
    train = load_dataset("digits", split="train").images
    kwargs = dict(metrics=["fd"], num_samples=300, steps=10, seed=1, cache_dir=tmp_path)
    fit = evaluate(gaussian_fit(train).model(process), process, digits_test, **kwargs)
    assert evaluate(gaussian_fit(train).model(process), process, digits_test, **kwargs)["fd"] == fit["fd"]
    copies = evaluate(memorizer(train, process), process, digits_test, **kwargs)
    assert copies["fd"] < 0.1 * fit["fd"]  # training images score near the data, a Gaussian blob does not


def test_markdown_table_only_has_requested_columns() -> None:
    table = markdown_table([{"sampler": "ddim", "steps": 5, "nfe": 5, "fd": 1.5, "protocol_text": "p"}])
    assert table.splitlines()[0] == "| sampler | steps | NFE | FD | protocol |"
    assert "| ddim | 5 | 5 | 1.5 | p |" in table


def test_evaluate_rejects_unknown_metrics_and_knows_fid_as_fd(digits_test) -> None:
    with pytest.raises(ConfigError, match="fdd"):
        evaluate(lambda z, t: z, GaussianDiffusion(), digits_test, metrics=["fdd"])
    assert check_metrics(["fid", "kid", "fd"]) == ("fd", "kid")


@pytest.mark.parametrize("argv, message", [
    (["--steps", "10,x"], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--num", "1"], "--num"),
    (["--sampler", ","], "--sampler"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys) -> None:
    assert main(["eval", "--checkpoint", "nowhere", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 2-step training run of a tiny UNet on digits (its checkpoint is what ``eval`` reads)."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny") / "run")


def test_eval_cli_on_a_tiny_checkpoint_writes_table_and_plot(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(tiny_run), "--metrics", "fd,kid,is,nll",
                 "--sampler", "ddim,ancestral", "--steps", "1,2", "--num", "16", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--nll-examples", "8", "--nll-num-t", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| sampler | steps | NFE | FD | KID | IS | NLL (bits/dim) | protocol |")
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert len(rows) == 5 and all(r["protocol"]["ema"] is True for r in rows)
    assert rows[-1]["nll"] > 0 and "digits/test (359 images)" in rows[0]["protocol_text"]
    assert (out / "eval.md").is_file() and Image.open(out / "eval_vs_nfe.png").size[0] > 300


def test_eval_cli_ode_nll_states_its_solver(tiny_run: Path, tmp_path: Path) -> None:
    code = main(["eval", "--checkpoint", str(tiny_run), "--metrics", "nll", "--nll-method", "ode",
                 "--nll-examples", "2", "--ode-tol", "1e-3", "--out", str(tmp_path)])
    assert code == 0
    (row,) = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert row["nll"] > 0 and "ode, divergence=hutchinson, num_probes=1, rtol=0.001, atol=0.001" in row["protocol_text"]
    assert not (tmp_path / "eval_vs_nfe.png").exists()  # nothing sampled, nothing to plot


class PixelExtractor(torch.nn.Module):
    """A custom extractor: raw pixels as features, the first ten as 'logits'."""

    name, fingerprint = "pixels", "none"

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = images.flatten(1).double()
        return flat, flat[:, :10]


def test_evaluate_accepts_a_custom_extractor(digits_test, tmp_path: Path) -> None:
    from difflab.evaluation import frechet_distance
    from difflab.models import DiffusionModel

    process = GaussianDiffusion()
    model = gaussian_fit(load_dataset("digits", split="train").images).model(process)
    got = evaluate(model, process, digits_test, metrics=["fd"], num_samples=100, steps=4, seed=2,
                   features=PixelExtractor(), cache_dir=tmp_path)
    samples = DiffusionModel.wrap(model, process, (1, 8, 8), sampler="ddim", clip_x0=1.0).sample(100, steps=4, seed=2)
    expected = frechet_distance(digits_test.images.flatten(1).double(), samples.clamp(-1, 1).flatten(1).double())
    assert got["fd"] == pytest.approx(expected, rel=1e-9) and "pixels vs digits/test" in got["protocol_text"]
    with pytest.raises(ConfigError, match="fingerprint"):
        evaluate(model, process, digits_test, metrics=["fd"], features=torch.nn.Identity())
