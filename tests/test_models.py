"""The model layer: per-sample seeds, the conditioning spec, the artefact round trip, earlier checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import difflab
from difflab.data import load_dataset
from difflab.errors import CheckpointError, ConfigError
from difflab.models import (
    Conditioning,
    DiffusionModel,
    IHDMModel,
    load_model,
    save_model,
)
from difflab.nn import build_network
from difflab.processes import HeatDissipation
from difflab.processes.noise import PerSampleGenerator, sample_seed

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"


def tiny_unet(num_classes: int | None = None) -> torch.nn.Module:
    return build_network("unet", seed=0, in_channels=1, base_channels=8, channel_mult=(1, 2), resolution=8,
                         norm_groups=4, attention_resolutions=(), head_channels=None, num_heads=1,
                         num_classes=num_classes).eval()


def gaussian_model(num_classes: int | None = None) -> DiffusionModel:
    return DiffusionModel(tiny_unet(num_classes), difflab.GaussianDiffusion(), (1, 8, 8),
                          conditioning=Conditioning.classes(num_classes, 0.1)).eval()


def ihdm_model() -> IHDMModel:
    model = IHDMModel(tiny_unet(), HeatDissipation(K=4, sigma_blur_max=2.0), (1, 8, 8))
    model.fit([load_dataset("digits").images[:200]])
    return model.eval()


# --- per-sample seeds -------------------------------------------------------------------------------
@pytest.mark.parametrize(("sampler", "options"), [("ancestral", {}), ("ddim", {"eta": 1.0}), ("dpmpp_2m_sde", {})])
def test_noise_of_sample_i_does_not_depend_on_the_batch_size(monkeypatch, sampler, options):
    model = gaussian_model()
    draws: list[tuple[int, torch.Tensor]] = []  # (sample index, its row) for every draw
    original = PerSampleGenerator.randn

    def recording(self, shape, **kwargs):
        out = original(self, shape, **kwargs)
        draws.extend(zip(self.indices, out, strict=True))
        return out

    monkeypatch.setattr(PerSampleGenerator, "randn", recording)
    images = {}
    per_sample = {}
    for batch_size in (8, 3):
        draws.clear()
        images[batch_size] = model.sample(8, seed=5, batch_size=batch_size, sampler=sampler, steps=4, **options)
        rows: dict[int, list[torch.Tensor]] = {}
        for i, row in draws:
            rows.setdefault(i, []).append(row)
        per_sample[batch_size] = rows
    assert sorted(per_sample[8]) == list(range(8)) and len(per_sample[8][0]) == 4  # initial noise + 3 steps
    for i in range(8):
        assert len(per_sample[8][i]) == len(per_sample[3][i])
        assert all(torch.equal(a, b) for a, b in zip(per_sample[8][i], per_sample[3][i], strict=True))
    torch.testing.assert_close(images[8], images[3], atol=1e-5, rtol=0)


def test_per_sample_generators_are_distinct_and_reproducible():
    a = PerSampleGenerator(3, [0, 1]).randn((2, 4))
    assert torch.equal(a, PerSampleGenerator(3, [0, 1]).randn((2, 4)))
    assert torch.equal(a[1], PerSampleGenerator(3, [1]).randn((1, 4))[0])  # row i depends on (seed, i) only
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[0], PerSampleGenerator(4, [0]).randn((1, 4))[0])
    assert sample_seed(1, 0) != sample_seed(0, 1)
    seeds = {sample_seed(7, i) for i in range(100_000)}
    assert len(seeds) == 100_000 and max(seeds) < 2**32  # one seed: distinct per sample, within MT19937's 32 bits
    with pytest.raises(ConfigError, match="cannot draw a batch of 3"):
        PerSampleGenerator(0, [0, 1]).randn((3, 4))


def test_ihdm_samples_do_not_depend_on_the_batch_size():
    model = ihdm_model()
    torch.testing.assert_close(model.sample(5, seed=1, batch_size=5), model.sample(5, seed=1, batch_size=2),
                               atol=1e-5, rtol=0)


# --- conditioning -----------------------------------------------------------------------------------
def test_conditioning_defaults_null_and_drop():
    spec = Conditioning.classes(3, drop_prob=0.5)
    y = spec.resolve(5, None)["class_labels"]
    assert y.tolist() == [0, 1, 2, 0, 1]
    assert spec.null({"class_labels": y})["class_labels"].tolist() == [3] * 5
    dropped = spec.drop({"class_labels": torch.arange(3).repeat(200)}, torch.Generator().manual_seed(0))
    frac = (dropped["class_labels"] == 3).double().mean().item()
    assert 0.4 < frac < 0.6
    kept = dropped["class_labels"] != 3
    assert torch.equal(dropped["class_labels"][kept], torch.arange(3).repeat(200)[kept])
    assert Conditioning.classes(3, 0.0).drop({"class_labels": y}, None)["class_labels"] is y
    assert Conditioning.from_config(spec.config()) == spec
    with pytest.raises(ConfigError, match="unconditional"):
        Conditioning().resolve(2, {"class_labels": y[:2]})
    with pytest.raises(ConfigError, match="shape \\(4,\\)"):
        spec.resolve(4, {"class_labels": y})


# --- the artefact -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: gaussian_model(num_classes=3), ihdm_model])
def test_save_load_round_trip_gives_the_same_samples(tmp_path, make):
    model = make()
    ema = make()
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    before, before_ema = model.sample(4, seed=2, steps=4 if model.family == "ihdm" else 3), ema.sample(4, seed=2)
    save_model(tmp_path / "m", model, ema=ema, metadata={"step": 3})
    raw, averaged = load_model(tmp_path / "m", ema=False), load_model(tmp_path / "m")
    assert type(raw) is type(model) and raw.config() == model.config()
    assert torch.equal(raw.sample(4, seed=2, steps=4 if model.family == "ihdm" else 3), before)
    assert torch.equal(averaged.sample(4, seed=2), before_ema)
    assert raw.artefact["metadata"] == {"step": 3} and not raw.training
    fitted = model.fitted_state()
    assert all(torch.equal(fitted[k], v) for k, v in raw.fitted_state().items()) and len(fitted) == len(raw.fitted_state())


def test_a_missing_fitted_artefact_is_named(tmp_path):
    folder = save_model(tmp_path / "m", ihdm_model())
    (folder / "fitted.safetensors").unlink()
    with pytest.raises(CheckpointError, match="fitted.safetensors is missing"):
        load_model(folder)
    # a manifest that does not list it (written by hand, say) still fails, naming the prior
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["fitted.safetensors"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"fitted.safetensors is missing: this ihdm model needs the prior p\(u_K\)"):
        load_model(folder)


def test_unsupported_metric_and_unknown_options():
    from difflab.models import UnsupportedMetric

    model = ihdm_model()
    with pytest.raises(UnsupportedMetric, match="no likelihood"):
        model.nll(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="no sampling option"):
        gaussian_model().sample(2, bogus=1)
    with pytest.raises(ConfigError, match="steps=3 must be K=4"):
        model.sample(2, steps=3)


# --- checkpoints of the earlier layout ------------------------------------------------------------------
@pytest.mark.parametrize("run", ["gauss", "ihdm"])
def test_an_earlier_checkpoint_names_the_conversion_command_then_converts(tmp_path, run, capsys):
    from difflab.cli.main import main
    from difflab.models.artefact import read_tensors

    folder = shutil.copytree(FIXTURES / run, tmp_path / run)
    step = folder / "checkpoints" / "step_0000002"
    with pytest.raises(CheckpointError, match=f"convert it with: difflab convert {step}"):
        load_model(folder)
    assert main(["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "x.png")]) == 2
    assert "difflab convert" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    old = {name: read_tensors(step / f"{name}.safetensors") for name in ("model", "ema")}
    assert main(["convert", str(folder)]) == 0
    for name, ema in (("model", False), ("ema", True)):
        loaded = load_model(folder, ema=ema)
        state = loaded.state_dict()
        assert all(torch.equal(state[f"network.{k}"], v) for k, v in old[name].items())
    model = load_model(folder)
    assert model.family == ("ihdm" if run == "ihdm" else "diffusion")
    if run == "ihdm":
        prior = difflab.processes.HeatPrior.load(FIXTURES / run / "prior.safetensors")
        assert torch.equal(model.process.prior.mean, prior.mean)
    assert model.sample(2).shape == (2, 1, 8, 8)
    assert main(["train", "--resume", str(folder), "optim.steps=3", "run.progress=false",
                 f"run.out_dir={tmp_path / 'resumed'}"]) == 0  # the training state came along
