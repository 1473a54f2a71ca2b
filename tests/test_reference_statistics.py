"""Reference statistics (.npz, pytorch-fid's layout): FD from them equals FD from the features,
they round-trip, malformed files fail in one line, and the CLI writes and uses them; sampling
commands show progress."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difflab.cli.main import main
from difflab.errors import DataError
from difflab.evaluation.quality import frechet_distance
from difflab.evaluation.statistics import FeatureStatistics


def features(n: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(16, 16, generator=g, dtype=torch.float64)
    return torch.randn(n, 16, generator=g, dtype=torch.float64) @ mix + shift


def test_fd_from_statistics_equals_fd_from_features_and_the_file_round_trips(tmp_path):
    real, fake = features(500, 0.0, 0), features(300, 0.5, 1)
    stats = FeatureStatistics.of(real)
    assert stats.frechet_distance(fake) == pytest.approx(frechet_distance(real, fake), rel=1e-6)
    assert stats.frechet_distance(real) == pytest.approx(0.0, abs=1e-6)
    back = FeatureStatistics.load(stats.save(tmp_path / "ref.npz"))
    assert torch.equal(back.mu, stats.mu) and torch.equal(back.sigma, stats.sigma)
    np.savez(tmp_path / "pytorch_fid.npz", mu=real.mean(0).numpy(), sigma=np.cov(real.numpy(), rowvar=False))
    other = FeatureStatistics.load(tmp_path / "pytorch_fid.npz")  # as pytorch-fid writes them
    torch.testing.assert_close(other.sigma, stats.sigma, rtol=1e-12, atol=1e-12)


def test_malformed_statistics_fail_in_one_line(tmp_path):
    cases = {"missing.npz": None, "no_sigma.npz": {"mu": np.zeros(3)}, "shape.npz": {"mu": np.zeros(3),
             "sigma": np.zeros((3, 2))}, "nan.npz": {"mu": np.full(2, np.nan), "sigma": np.eye(2)},
             "objects.npz": {"mu": np.array([{"a": 1}], dtype=object), "sigma": np.eye(1)}}
    for name, arrays in cases.items():
        if arrays is not None:
            np.savez(tmp_path / name, **arrays)
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "one.npy", np.zeros(3))
    for name in [*cases, "text.npz", "one.npy"]:
        with pytest.raises(DataError) as err:
            FeatureStatistics.load(tmp_path / name)
        assert "\n" not in str(err.value) and name in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "run"
    assert main(["train", "--config", "digits-gauss", "network.base_channels=16", "optim.batch_size=16",
                 "optim.steps=2", "run.progress=false", "run.sample_every=0", "run.eval_every=0",
                 "run.sample.num=2", f"run.out_dir={out}"]) == 0
    return out


def test_the_cli_writes_statistics_and_eval_scores_fd_against_them(digits_run, tmp_path, capsys):
    ref = tmp_path / "digits-test.npz"
    assert main(["features", "stats", "--data", "digits", "--out", str(ref)]) == 0
    common = ["eval", "--checkpoint", str(digits_run), "--num", "300", "--steps", "3", "--cache-dir",
              str(tmp_path / "cache")]
    assert main([*common, "--metrics", "fid", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--metrics", "fd", "--ref", str(ref), "--out", str(tmp_path / "b")]) == 0
    (a,), (b,) = (json.loads((tmp_path / d / "eval.json").read_text())["rows"] for d in ("a", "b"))
    assert b["fd"] == pytest.approx(a["fd"], rel=1e-4) and "digits-test.npz" in b["protocol_text"]
    err = capsys.readouterr().err
    assert "difflab eval: 250/300 images" in err and "difflab eval: 300/300 images" in err


@pytest.mark.parametrize(("metrics", "made_by", "fragment"), [
    ("fd,kid", {}, "they score fd and is, not kid"),
    ("fd", {}, "have d=64 features but extractor 'digits-cnn' gives 128"),
    ("fid", {"extractor": "mnist-cnn", "fingerprint": "0"}, "were made with extractor 'mnist-cnn'"),
])
def test_eval_with_statistics_refuses_what_they_cannot_score(digits_run, tmp_path, capsys, metrics, made_by, fragment):
    ref = FeatureStatistics.of(features(100, 0.0, 0)[:, :8].repeat(1, 8), **made_by).save(tmp_path / "ref.npz")
    out = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(digits_run), "--num", "10", "--ref", str(ref), "--metrics", metrics,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_sample_shows_progress(digits_run, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(digits_run), "--num", "300", "--steps", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    err = capsys.readouterr().err
    assert "difflab sample: 250/300 images" in err and "difflab sample: 300/300 images" in err and "ETA" in err
