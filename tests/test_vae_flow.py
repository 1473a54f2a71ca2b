"""VAE / beta-VAE and normalizing flows: closed forms, brute-force Jacobians, bounds by quadrature,
and the families through ``difflab train`` / ``sample`` / ``eval`` (save, load, resume, bad input)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from difflab.cli.main import main
from difflab.likelihood.quantization import discretized_logistic_log_prob
from difflab.models import FlowModel, VAEModel, load_model
from difflab.models.vae import gaussian_log_density
from difflab.nn import ConvVAE, ConvVAEConfig, Glow, GlowConfig
from difflab.nn.flow import ActNorm, AffineCoupling, InvConv1x1, squeeze, unsqueeze
from difflab.training import Trainer
from difflab.training.config import load_config

torch.set_default_dtype(torch.float32)


def perturbed(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """``module`` with every parameter moved off its (often identity) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# --- flows ---------------------------------------------------------------------------------------
def small_glow() -> Glow:
    torch.manual_seed(0)
    return Glow(GlowConfig(in_channels=1, resolution=8, levels=2, steps_per_level=2, checkerboard_steps=2,
                           hidden_channels=8))


def test_glow_inverse_undoes_forward():
    glow = perturbed(small_glow(), scale=0.1)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    glow.initialize(x)
    zs, _ = glow(x)
    assert [tuple(z.shape[1:]) for z in zs] == glow.latent_shapes() and sum(z[0].numel() for z in zs) == 64
    assert torch.allclose(glow.inverse(zs), x, atol=1e-4)
    assert torch.equal(unsqueeze(squeeze(x)), x)


LAYERS = {
    "actnorm": lambda: ActNorm(2),
    "invconv": lambda: InvConv1x1(2),
    "checkerboard-0": lambda: AffineCoupling(2, 8, "checkerboard", 0),
    "checkerboard-1": lambda: AffineCoupling(2, 8, "checkerboard", 1),
    "channel-0": lambda: AffineCoupling(2, 8, "channel", 0),
    "channel-1": lambda: AffineCoupling(2, 8, "channel", 1),
}


@pytest.mark.parametrize("name", [*LAYERS, "glow"])
def test_each_layers_log_determinant_is_the_brute_force_jacobians(name):
    torch.manual_seed(1)
    if name == "glow":
        layer = perturbed(small_glow().double(), scale=0.1)
        x = torch.randn(1, 1, 8, 8, dtype=torch.float64)

        def f(v):
            return torch.cat([z.flatten() for z in layer(v.view(x.shape))[0]])
    else:
        layer = perturbed(LAYERS[name]().double())
        x = torch.randn(1, 2, 3, 4, dtype=torch.float64)

        def f(v):
            return layer(v.view(x.shape))[0].flatten()
    jacobian = torch.autograd.functional.jacobian(f, x.flatten())  # (D, D)
    logdet = layer(x)[1]
    assert logdet.shape == (1,)
    assert torch.allclose(logdet[0], torch.linalg.slogdet(jacobian)[1], atol=1e-8), name
    if name != "glow":
        assert torch.allclose(layer.inverse(layer(x)[0]), x, atol=1e-10)


def test_a_fresh_flow_gives_the_closed_form_gaussian_nll_on_gaussian_data():
    """Zero couplings and identity ActNorm leave the rotations of the 1x1 convolutions: an
    orthogonal map, under which N(0, I) data keeps its density -log N(x; 0, I)."""
    model = FlowModel(small_glow(), (1, 8, 8))
    x = torch.randn(16, 1, 8, 8)
    closed_form = 0.5 * (x.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) / (64 * math.log(2))
    assert torch.allclose(model.nll(x, levels=None), closed_form, atol=1e-4)
    zs, logdet = model.network(x)
    assert torch.allclose(logdet, torch.zeros(16), atol=1e-4)  # float32 rotations: |det| = 1 to ~1e-7 each


def test_dequantized_flow_nll_is_the_density_bound_of_the_bins():
    """nll with levels L = E[-log p(y)] - D log Delta: for a fresh (orthogonal) flow and the
    image at level 128 (~0), -log p(y) ~ D/2 log(2 pi), so the bound is ~ D (1/2 log 2 pi - log(2/(L-1)))."""
    model = FlowModel(small_glow(), (1, 8, 8), levels=256)
    x = torch.full((2, 1, 8, 8), -1 + 2 * 128 / 255)  # level 128, next to 0
    expected = (0.5 * math.log(2 * math.pi) - math.log(2 / 255)) / math.log(2)
    assert torch.allclose(model.nll(x, levels=256, generator=torch.Generator().manual_seed(0)),
                          torch.full((2,), expected), atol=2e-3)


# --- VAEs ----------------------------------------------------------------------------------------
def test_discretized_logistic_is_a_distribution_over_the_levels():
    levels = 16
    x = (2 * torch.arange(levels, dtype=torch.float64) / (levels - 1) - 1).view(levels, 1)
    for mean, log_scale in ((0.3, -2.0), (-0.9, -6.0), (2.0, 0.5)):
        p = discretized_logistic_log_prob(x, torch.full_like(x, mean), torch.full_like(x, log_scale), levels).exp()
        assert abs(p.sum().item() - 1) < 1e-9


@pytest.fixture(scope="module")
def tiny_vae() -> tuple[VAEModel, torch.Tensor, torch.Tensor]:
    """A 1-D-latent VAE on 2x2 images with 4 levels (trained 300 steps on 6 images, then its
    posterior shifted and widened so q is clearly not p(z | x)), the images, and log p(x) by
    quadrature over z. The bounds hold for any q; a poor q makes their gaps measurable."""
    torch.manual_seed(3)
    net = ConvVAE(ConvVAEConfig(in_channels=1, resolution=2, base_channels=4, channel_mult=(1,), latent_dim=1)).double()
    model = VAEModel(net, (1, 2, 2), levels=4)
    x = (2 * torch.randint(0, 4, (6, 1, 2, 2), generator=torch.Generator().manual_seed(0)) / 3 - 1).double()
    optimizer, g = torch.optim.Adam(net.parameters(), lr=1e-2), torch.Generator().manual_seed(1)
    for _ in range(300):
        optimizer.zero_grad()
        sum(v.mean() for v in model.losses((x, None), g).values()).backward()
        optimizer.step()
    with torch.no_grad():
        net.to_posterior.bias += torch.tensor([1.0, 1.5], dtype=torch.float64)  # (mean, log-variance) of q
    z = torch.linspace(-10, 10, 20001, dtype=torch.float64).view(-1, 1)  # (Z, 1)
    with torch.no_grad():
        mean, log_scale = net(z)  # (Z, 1, 2, 2)
        log_px = torch.stack([discretized_logistic_log_prob(xi.expand_as(mean), mean, log_scale, 4) for xi in x])
        log_joint = log_px + gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))  # (N, Z)
    log_p = torch.logsumexp(log_joint, 1) + math.log(z[1, 0] - z[0, 0])
    return model, x, log_p


def test_elbo_below_iwae_below_log_p_and_iwae_rises_with_k(tiny_vae):
    model, x, log_p = tiny_vae
    to_nats = 4 * math.log(2)  # bits/dim -> nats per image of D = 4 pixels
    g = torch.Generator().manual_seed(0)

    def bound(method, reps, **k):  # mean over reps of the estimated lower bound on log p(x), (N,)
        return -torch.stack([model.nll(x, method, generator=g, **k) for _ in range(reps)]).mean(0) * to_nats

    elbo, iwae = bound("elbo", 400), {k: bound("iwae", 100, k=k) for k in (4, 32, 256)}
    gap = {"elbo": (log_p - elbo).mean()} | {k: (log_p - v).mean() for k, v in iwae.items()}  # over the images
    assert gap["elbo"] > 1.0 > gap[4] > gap[32] > gap[256] > -0.01  # ELBO <= IWAE_4 <= IWAE_32 <= IWAE_256 <= log p
    assert (elbo < log_p).all() and (iwae[4] < log_p).all() and (elbo < iwae[4]).all()


# --- the families through the trainer and the CLI ------------------------------------------------
DIGITS = {
    "vae": ["data.name=digits", "model.family=vae", "model.levels=17", "network.kind=vae", "network.resolution=8",
            "network.base_channels=8", "network.channel_mult=[1]", "network.latent_dim=4"],
    "flow": ["data.name=digits", "model.family=flow", "model.levels=17", "network.kind=glow", "network.resolution=8",
             "network.levels=2", "network.steps_per_level=1", "network.checkerboard_steps=1",
             "network.hidden_channels=8"],
}
COMMON = ["optim.batch_size=8", "optim.warmup_steps=1", "run.progress=false", "run.sample_every=0",
          "run.eval_every=0", "run.sample.num=4", "run.sample.sampler=auto", "run.deterministic=true"]


def digits_config(family: str, out: Path, steps: int = 4):
    return load_config(None, [*DIGITS[family], *COMMON, f"optim.steps={steps}", f"run.out_dir={out}"])


@pytest.mark.parametrize("family", ["vae", "flow"])
def test_two_steps_save_load_identical_samples_and_bit_exact_resume(family, tmp_path):
    trainer = Trainer(digits_config(family, tmp_path / "a", steps=2))
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert loaded.family == family
    assert torch.equal(loaded.sample(5, seed=3), trainer.ema.module.eval().sample(5, seed=3))
    torch.testing.assert_close(loaded.sample(5, seed=3, batch_size=2), loaded.sample(5, seed=3))  # per-sample seeds
    Trainer(digits_config(family, tmp_path / "b", steps=4)).train()
    Trainer(digits_config(family, tmp_path / "c", steps=2)).train()
    resumed = Trainer(digits_config(family, tmp_path / "c", steps=4), resume="auto")
    assert resumed.step == 2
    resumed.train()
    b, c = load_model(tmp_path / "b"), load_model(tmp_path / "c")
    assert all(torch.equal(p, q) for p, q in zip(b.state_dict().values(), c.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("family", "overrides", "fragment"),
    [
        ("vae", ["model.beta=-1"], "model.beta=-1 must be >= 0"),
        ("vae", ["model.bta=4"], "unknown model option(s) ['bta']; allowed: beta, levels, pixels, temperature"),
        ("vae", ["model.family=diffusion"], "unknown model option(s) ['beta', 'levels', 'pixels']: model.family 'diffusion' has"),
        ("vae", ["model.family=flow"], "unknown model option(s) ['beta', 'pixels']; allowed: levels, temperature"),
        ("vae", ["network.resolution=16"], "network.resolution=16 but the images are (C, H, W) = (1, 8, 8)"),
        ("vae", ["model.levels=256"], "the training images are not on the 256-level grid"),
        ("vae", ["model.pixels=median"], "model.pixels='median' is not allowed"),
        ("vae", ["run.sample.sampler=ddim"], "run.sample.sampler='ddim' is not allowed; choose one of: 'auto'"),
        ("flow", ["model.temperature=0"], "model.temperature=0 must be positive"),
        ("flow", ["network.levels=4"], "Glow resolution=8 must be a multiple of 2^levels = 16"),
        ("flow", ["model.beta=4"], "unknown model option(s) ['beta']; allowed: levels, temperature"),
        ("flow", ["model.family=vae"], "a vae model needs network.kind: vae; got 'glow'"),
    ],
)
def test_bad_options_exit_2_with_one_line_and_write_nothing(family, overrides, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", f"mnist-{family}", *DIGITS[family], *COMMON, "optim.steps=1", *overrides,
                 f"run.out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reference-cache")


TINY_MNIST = {
    "mnist-vae": ["network.base_channels=8", "network.latent_dim=4"],
    "mnist-beta-vae": ["network.base_channels=8", "network.latent_dim=4"],
    "mnist-flow": ["network.steps_per_level=1", "network.checkerboard_steps=1", "network.hidden_channels=8"],
}


@pytest.mark.parametrize("name", sorted(TINY_MNIST))
def test_shipped_config_trains_samples_and_evaluates_through_the_cli(name, tmp_path, cache, capsys):
    pytest.importorskip("difflab.data.mnist")
    out = tmp_path / "run"
    assert main(["train", "--config", name, *TINY_MNIST[name], "optim.steps=2", "optim.batch_size=8",
                 "optim.warmup_steps=1", "run.progress=false", "run.sample.num=4", "run.eval_every=2",
                 "run.eval.num_samples=10", "run.eval.metrics=[fd,nll]", "run.eval.nll_examples=4",
                 f"run.out_dir={out}"]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"fd", "nll"} <= set(next(r for r in logged if "eval" in r)["eval"])  # periodic evaluation
    assert main(["sample", "--checkpoint", str(out), "--num", "3", "--temperature", "0.5",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert "samples, step 2, EMA weights, " in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out), "--metrics", "fd,nll", "--num", "10", "--nll-examples", "4",
                 "--nll-k", "3", *(["--nll-method", "iwae"] if "vae" in name else []),
                 "--out", str(tmp_path / "ev"), "--cache-dir", str(cache)]) == 0
    rows = json.loads((tmp_path / "ev" / "eval.json").read_text())["rows"]
    assert rows[0]["fd"] > 0 and rows[0]["nfe"] == 1
    assert 0 < rows[-1]["nll"] < 8.5  # bits/dim of 8-bit data: a fresh model is near the uniform 8
    assert ("iwae, k=3" if "vae" in name else "exact") in rows[-1]["protocol_text"]
    if "vae" in name:  # the ELBO is the default estimator; the flow has no other
        assert main(["eval", "--checkpoint", str(out), "--metrics", "nll", "--nll-method", "ode", "--nll-examples", "2",
                     "--out", str(tmp_path / "bad")]) == 2
        assert "--nll-method for a vae model='ode' is not allowed" in capsys.readouterr().err
