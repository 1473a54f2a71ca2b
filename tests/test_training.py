"""Training: config loading/validation, EMA, LR schedule, and train -> save -> load -> sample."""

from __future__ import annotations

import math
import re

import pytest
import torch
import yaml

from difflab.errors import ConfigError
from difflab.training import (
    EMA,
    TrainConfig,
    Trainer,
    learning_rate,
    load_checkpoint,
    load_config,
    shipped_configs,
)
from difflab.training.config import model_family
from difflab.training.state import flatten, unflatten

# A 0.18M-parameter UNet on 8x8 digits: a training step takes milliseconds.
TINY = [
    "network.base_channels=16",
    "optim.batch_size=16",
    "optim.steps=2",
    "optim.warmup_steps=1",
    "run.log_every=1",
    "run.progress=false",
    "run.sample.steps=3",
    "run.sample.num=4",
]


def tiny_config(tmp_path, *extra: str) -> TrainConfig:
    return load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", *extra])


# --- config -------------------------------------------------------------------------------

def test_config_roundtrip_through_yaml(tmp_path):
    config = load_config("digits-blur", ["optim.lr=3e-4", "run.sample.sampler=ddim", "run.sample.eta=0.5",
                                         "network.channel_mult=[1,2]"])
    assert config.optim.lr == 3e-4 and config.run.sample.eta == 0.5
    assert config.network.channel_mult == (1, 2)
    path = tmp_path / "saved.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert again.to_dict() == config.to_dict()
    assert yaml.safe_load(config.to_yaml()) == config.to_dict()


def test_defaults_are_filled_in_and_sections_optional():
    config = TrainConfig.from_dict({"optim": {"steps": 5}})
    assert config.optim.steps == 5 and config.optim.lr == 2e-4
    assert config.process.config() == {"kind": "gaussian", "schedule": "cosine", "logsnr_min": -10.0, "logsnr_max": 10.0}
    assert config.to_dict()["network"]["kind"] == "unet" and config.network.norm_groups == 8


@pytest.mark.parametrize("name", sorted(shipped_configs()))
def test_shipped_configs_load(name):
    config = load_config(name)
    assert config.run.out_dir == f"runs/{name}"
    kind = name.removesuffix("-cond").rsplit("-", 1)[1]  # digits-blur-cond: a class-conditional digits-blur
    if kind in ("vae", "flow", "pixelcnn", "gan", "vqvae", "cld", "ddgan", "lsgm"):  # families named by the config
        assert model_family(config) == kind
        return
    assert config.process.kind == {"blur": "blurring", "gauss": "gaussian", "ihdm": "heat", "pca": "gaussian",
                                   "kl": "gaussian", "vq": "gaussian", "ldae": "dae"}[kind]


def test_shipped_cifar_configs_match_the_blurring_paper_scale():
    config = load_config("cifar10-blur")
    net = config.network
    assert (net.base_channels, net.channel_mult, net.attention_resolutions) == (128, (1, 2, 2, 2), (16,))
    assert net.dropout == 0.1 and config.process.sigma_blur_max == 20.0 and config.optim.batch_size == 128


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optim.lr=fast"], "optim.lr='fast' must be a number"),
        (["optim.lr=-1"], "optim.lr=-1.0 is out of range"),
        (["optim.steps=1.5"], "optim.steps=1.5 must be an integer"),
        (["optim.stepz=3"], "unknown optim option(s) ['stepz']; allowed: batch_size"),
        (["bogus.x=1"], "unknown config section(s) ['bogus']"),
        (["objective.prediction=noise"], "objective.prediction='noise' is not allowed; choose one of"),
        (["run.sample.num=0"], "run.sample.num=0 is out of range"),
        (["run.sample.sampler=euler9"], "run.sample.sampler='euler9' is not allowed; choose one of"),
        (["run.sample.sampler=ancestral", "run.sample.eta=0.5"], "sampler 'ancestral' has no eta"),
        (["optim.lr=.inf"], "optim.lr=inf must be a finite number"),
        (["process.kind=heat2"], "process.kind='heat2' is not allowed"),
        (["process.sigma_blur_max=3"], "unknown process option(s) ['sigma_blur_max']; allowed: logsnr_max"),
        (["process.kind=blurring", "process.schedule=linear"], "unknown process option(s) ['schedule']"),
        (["network.channel_mult=3"], "network.channel_mult must be a list"),
        (["network.norm_groups=7"], "not divisible by norm_groups=7"),
        (["data.hflip=maybe"], "data.hflip='maybe' must be true or false"),
        (["optim.betas=[0.9]"], "optim.betas must be a list of 2 values"),
        (["optim"], "must look like section.key=value"),
        (["optim.lr=1", "optim.lr.x=1"], "optim.lr is not a section"),
        (["objective.cond_drop_prob=0.1"], "needs a class-conditional network: set network.num_classes"),
        (["process.logsnr_min=-30"], "prediction='eps' with a process whose terminal logSNR is -30"),
        (["run.eval.metrics=[fd,fid]"], "run.eval.metrics[1]='fid' is not allowed; choose one of: 'fd', 'kid'"),
        (["run.eval.metrics=[]"], "run.eval.metrics is empty; list any of fd, kid, is, precision, recall, nll"),
        (["run.eval.num_samples=1"], "run.eval.num_samples=1 is out of range [2, inf)"),
        (["run.eval.sampler=euler9"], "run.eval.sampler='euler9' is not allowed"),
        (["run.eval.split=val"], "run.eval.split='val' is not allowed; choose one of"),
        (["run.eval_every=-5"], "run.eval_every=-5 is out of range"),
        (["data.name=cifar10", "network.in_channels=3", "run.eval_every=100"],
         "on data 'cifar10' needs Inception features (only digits and mnist have shipped ones)"),
    ],
)
def test_bad_options_raise_one_line_config_error(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_contradictions_resolve_with_the_suggested_fix():
    load_config(None, ["process.logsnr_min=-30", "objective.prediction=v"])
    load_config(None, ["data.name=cifar10", "run.eval_every=100", "run.eval.metrics=[nll]"])
    load_config(None, ["data.name=cifar10", "run.eval_every=100", "run.eval.inception_weights=w.pth"])
    load_config(None, ["objective.cond_drop_prob=0.1", "network.num_classes=10"])


def test_yaml_errors_and_non_mappings(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 1e-3\n")
    with pytest.raises(ConfigError, match="invalid YAML in .*bad.yaml at line"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)
    bad.write_text("optim: 3\n")
    with pytest.raises(ConfigError, match="optim must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="neither a file nor a shipped config; shipped: cifar10-blur"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_11_exponent_strings_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n")  # YAML 1.1 reads this as the string '1e-3'
    assert load_config(path).optim.lr == 1e-3


# --- schedule, EMA, state ------------------------------------------------------------------

def test_learning_rate_warmup_is_linear_then_constant():
    lrs = [learning_rate(s, 1e-3, 4) for s in range(6)]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(0, 1e-3, 0) == 1e-3


def test_ema_matches_closed_form():
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.9, warmup=False)
    expected = 0.0
    for k in range(1, 6):
        with torch.no_grad():
            net.weight.fill_(float(k))
        ema.update(net)
        expected = 0.9 * expected + 0.1 * k
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert ema.num_updates == 5 and not ema.module.weight.requires_grad


def test_ema_warmup_decay():
    ema = EMA(torch.nn.Linear(1, 1), decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999


def test_state_flatten_roundtrip():
    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0]}]},
        "loss": float("inf"),
        "none": None,
    }
    skeleton, tensors = flatten(state, "state")
    assert set(tensors) == {"state.optimizer.state.0.step", "state.optimizer.state.0.exp_avg"}
    back = unflatten(yaml.safe_load(yaml.safe_dump(skeleton)), tensors)
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert list(back["optimizer"]["state"]) == [0]
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert math.isinf(back["loss"]) and back["none"] is None
    with pytest.raises(TypeError, match="no pickles"):
        flatten({"x": object()})


# --- end to end ------------------------------------------------------------------------------

def test_train_save_load_sample_is_identical(tmp_path):
    config = tiny_config(tmp_path)
    trainer = Trainer(config)
    summary = trainer.train()
    assert summary["steps"] == 2 and summary["interrupted"] is None and math.isfinite(summary["final_loss"])
    run = tmp_path / "run"
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    assert (run / "samples" / "step_0000002.png").is_file() and (run / "loss.png").is_file()

    from difflab import load_model

    kwargs = dict(steps=3, seed=7)
    for use_ema, in_memory in ((True, trainer.ema.module), (False, trainer.unwrapped_model)):
        expected = in_memory.eval().sample(4, **kwargs)
        loaded = load_model(run, ema=use_ema)
        got = loaded.sample(4, **kwargs)
        assert torch.equal(got, expected)
        assert loaded.config() == in_memory.config() and loaded.prediction == config.objective.prediction
    ckpt = load_checkpoint(run)
    assert ckpt.config == config
    assert ckpt.step == 2 and ckpt.training_state["image_shape"] == [1, 8, 8]
    # the EMA (decay warm-up 0.1, 0.18) differs from the raw weights after 2 steps
    raw, ema = ckpt.model.state_dict(), ckpt.ema_model.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)


def test_training_lowers_the_loss(tmp_path):
    config = tiny_config(tmp_path, "optim.steps=60", "optim.lr=2e-3", "optim.warmup_steps=5", "run.log_every=20",
                         "run.checkpoint_every=0")
    Trainer(config).train()
    from difflab.training.metrics import MetricsLog

    losses = [r["loss"] for r in MetricsLog(tmp_path / "run" / "metrics.jsonl").read()]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]


def test_class_conditional_training_with_label_dropout(tmp_path):
    config = tiny_config(tmp_path, "network.num_classes=10", "objective.cond_drop_prob=0.2")
    trainer = Trainer(config)
    x0, cond = trainer._batch(torch.arange(16))
    assert cond is not None and cond["class_labels"].shape == (16,)
    assert trainer.train()["steps"] == 2
    model = trainer.ema.module.eval()
    x = model.sample(12, steps=2)
    labels = model.conditioning.resolve(12, None)["class_labels"]
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1] and x.shape == (12, 1, 8, 8)
    one_class = model.sample(12, steps=2, cond={"class_labels": torch.full((12,), 3)})
    assert not torch.equal(one_class, x) and torch.equal(one_class[3], x[3])  # sample i: (seed, i) and its label


# --- periodic evaluation -------------------------------------------------------------------

EVAL = ["run.eval_every=1", "run.eval.metrics=[fd,kid,nll]", "run.eval.num_samples=16", "run.eval.steps=2",
        "run.eval.nll_examples=4", "network.dropout=0.1", "data.hflip=true"]  # dropout, hflip: every RNG stream


def eval_lines(run) -> list[dict]:
    from difflab.training.metrics import MetricsLog

    return [r for r in MetricsLog(run / "metrics.jsonl").read() if "eval" in r]


def test_periodic_eval_logs_plots_and_leaves_training_unchanged(tmp_path):
    cache = f"run.eval.cache_dir={tmp_path / 'cache'}"
    plain = Trainer(tiny_config(tmp_path / "plain", *EVAL[-2:]))
    plain.train()
    evaluated = Trainer(tiny_config(tmp_path / "eval", *EVAL, cache))
    evaluated.train()
    run = tmp_path / "eval" / "run"
    lines = eval_lines(run)
    assert [r["step"] for r in lines] == [1, 2] and (run / "eval.png").is_file()
    for r in lines:
        assert set(r) == {"step", "eval", "protocol", "seconds"}
        assert set(r["eval"]) == {"fd", "kid", "kid_std", "nll", "nll_se"}
        assert all(math.isfinite(v) for v in r["eval"].values())
        assert "n=16, seed=0, ddim 2 steps, EMA, digits-cnn vs digits/test" in r["protocol"]
    assert not (tmp_path / "plain" / "run" / "eval.png").exists()
    # evaluating draws from its own generators: weights, EMA and every RNG stream are unchanged
    a, b = load_checkpoint(tmp_path / "plain" / "run"), load_checkpoint(run)
    for x, y in ((a.model, b.model), (a.ema_model, b.ema_model)):
        assert all(torch.equal(x.state_dict()[k], y.state_dict()[k]) for k in x.state_dict())
    assert all(torch.equal(a.training_state["rng"][k], b.training_state["rng"][k]) for k in a.training_state["rng"])
    assert evaluated.model.training and not evaluated.ema.module.training  # modes as before

    # resuming the plain run at step 2 with evaluation on catches up the evaluation of step 2
    # (same EMA weights, same seed: the same numbers), then evaluates step 3
    resumed = Trainer(tiny_config(tmp_path / "plain", *EVAL, cache, "optim.steps=3"), resume="auto")
    resumed.train()
    caught_up = eval_lines(tmp_path / "plain" / "run")
    assert [r["step"] for r in caught_up] == [2, 3] and caught_up[0]["eval"] == lines[1]["eval"]
    Trainer(tiny_config(tmp_path / "plain", *EVAL, cache, "optim.steps=4"), resume="auto").train()
    assert [r["step"] for r in eval_lines(tmp_path / "plain" / "run")] == [2, 3, 4]  # no duplicate at step 3


def test_inference_restores_the_mode_and_the_global_rng():
    from difflab.training.device import inference

    net = torch.nn.Dropout(0.5).train()
    state = torch.get_rng_state()
    with inference(net, torch.device("cpu")) as model:
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(3)
    assert net.training and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["run.eval.features=inception", "run.eval.inception_weights=/nonexistent/w.pth"], "/nonexistent/w.pth"),
        (["run.eval.features=mnist-cnn"], "feature extractor 'mnist-cnn' takes images of shape (1, 28, 28)"),
    ],
)
def test_eval_setup_errors_come_before_training(tmp_path, overrides, fragment):
    config = tiny_config(tmp_path, "run.eval_every=1", *overrides)
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        Trainer(config)
    assert not (tmp_path / "run").exists()
