"""Grids tuned to a model (``difflab.tune_grid``), checked on Gaussian data with its exact denoiser."""

from __future__ import annotations

import json

import pytest
import torch

import difflab
from difflab.errors import CheckpointError, ConfigError
from difflab.processes import BlurringDiffusion, GaussianDiffusion
from difflab.processes.analytic import GaussianData
from difflab.samplers import SAMPLERS, TunedGrid, TunedGrids, make_denoiser, time_grid
from difflab.samplers.api import grid_name, grid_times
from difflab.samplers.tuning import TUNED_T_MIN, check_times

SIZE = 8
TUNE = {"reference_steps": 400, "max_evals": 60, "dtype": torch.float64}


def _power_law() -> GaussianData:
    """Variances from 1 (lowest frequency) to 1e-3 (highest), like natural images."""
    i = torch.arange(SIZE, dtype=torch.float64)
    f = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
    var = (1.0 + f) ** (-torch.log(torch.tensor(1e3)) / torch.log(1.0 + f.max()))
    return GaussianData(0.3 * var.sqrt()[None], var[None])


def _relative_w2(process, data: GaussianData, sampler: str, ts: torch.Tensor) -> float:
    """Relative W2 of the sampler's output law to the data: the sampler is affine in the noise,
    so pushing n = 0 and n = 1 through it gives the output N(offset, gain^2) exactly."""
    n = torch.stack([torch.zeros(1, SIZE, SIZE), torch.ones(1, SIZE, SIZE)]).double()
    _, sigma_1 = process.alpha_sigma(torch.ones(2, dtype=torch.float64), tuple(n.shape))
    denoise = make_denoiser(data.model(process, "eps"), process, "eps")
    out = SAMPLERS[sampler](denoise, process, sigma_1 * n, ts)
    offset, gain = out[0], out[1] - out[0]
    w2 = ((offset - data.mean) ** 2 + (gain.abs() - data.var.sqrt()) ** 2).sum()
    return (w2 / (data.mean**2 + data.var).sum()).sqrt().item()


@pytest.mark.parametrize(("process", "sampler", "steps"), [
    (GaussianDiffusion("linear"), "dpmpp_2m", 8),
    (GaussianDiffusion("cosine"), "unipc", 6),
    (BlurringDiffusion(), "unipc", 8),
], ids=["linear-2m", "cosine-unipc", "blurring-unipc"])
def test_tuned_grid_beats_logsnr_on_its_objective_and_on_the_true_w2(process, sampler, steps):
    data = _power_law()
    tuned = difflab.tune_grid(data.model(process), process, (16, 1, SIZE, SIZE), steps, sampler=sampler,
                              generator=torch.Generator().manual_seed(0), **TUNE)
    ts = tuned.as_tensor()
    assert (tuned.sampler, tuned.steps, len(ts)) == (sampler, steps, steps + 1)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and bool((ts[1:] < ts[:-1]).all())
    assert ts[-2].item() == pytest.approx(TUNED_T_MIN, rel=1e-9)  # the end is kept
    assert tuned.rel_mse_reference < 0.05 * tuned.rel_mse  # the reference has converged
    assert tuned.rel_mse < 0.5 * tuned.rel_mse_start
    # Independent check (not the objective): the distance of the sampled law to the data.
    start = time_grid("logsnr", steps, process=process, t_min=TUNED_T_MIN)
    assert _relative_w2(process, data, sampler, ts) < 0.7 * _relative_w2(process, data, sampler, start)


def test_tuning_is_deterministic_and_needs_an_ode_sampler():
    process, data = GaussianDiffusion("linear"), _power_law()
    runs = [difflab.tune_grid(data.model(process), process, (4, 1, SIZE, SIZE), 5,
                              generator=torch.Generator().manual_seed(1), **TUNE) for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ConfigError, match="deterministic ODE sampler"):
        difflab.tune_grid(data.model(process), process, (4, 1, SIZE, SIZE), 5, sampler="ancestral")
    with pytest.raises(ConfigError, match="reference_steps > steps"):
        difflab.tune_grid(data.model(process), process, (4, 1, SIZE, SIZE), 50, reference_steps=40)


def test_explicit_and_tuned_grids_in_sample():
    process, data = GaussianDiffusion("linear"), _power_law()
    noise = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"noise": noise, "dtype": torch.float64, "sampler": "dpmpp_2m"}
    named = difflab.sample(data.model(process), process, noise.shape, steps=6, grid="karras", **kw)
    times = time_grid("karras", 6, process=process)
    assert torch.equal(difflab.sample(data.model(process), process, noise.shape, steps=6, grid=times, **kw), named)
    assert torch.equal(difflab.sample(data.model(process), process, noise.shape, steps=6, grid=times.tolist(), **kw),
                       named)
    # A TunedGrids table: its grid for (sampler, steps), else the process's auto grid.
    entry = TunedGrid("dpmpp_2m", 6, tuple(times.tolist()), 1.0, 0.5, 0.0, 0)
    table = TunedGrids("abc", [entry])
    assert torch.equal(grid_times(table, 6, process, "dpmpp_2m"), times)
    assert torch.equal(grid_times(table, 7, process, "dpmpp_2m"), time_grid("logsnr", 7, process=process))
    assert (grid_name(table, 6, process, "dpmpp_2m"), grid_name(table, 7, process, "dpmpp_2m")) == ("tuned", "logsnr")
    assert torch.equal(difflab.sample(data.model(process), process, noise.shape, steps=6, grid=table, **kw), named)


@pytest.mark.parametrize(("times", "steps", "message"), [
    ([1.0, 0.5, 0.5, 0.0], 3, "decrease strictly"),
    ([1.0, 0.5, 0.1], 2, "exactly 0"),
    ([1.5, 0.5, 0.0], 2, "t <= 1"),
    ([1.0, 0.5, 0.0], 3, "needs 4 times"),
    ([1.0, float("nan"), 0.0], 2, "finite"),
])
def test_bad_explicit_grids_are_named(times, steps, message):
    with pytest.raises(ConfigError, match=message):
        check_times(times, steps)
    process, data = GaussianDiffusion("linear"), _power_law()
    with pytest.raises(ConfigError, match=message):
        difflab.sample(data.model(process), process, (1, 1, SIZE, SIZE), steps=steps, grid=times)


def test_tuned_grids_file_round_trip_and_staleness(tmp_path):
    grid = TunedGrid("unipc", 3, (1.0, 0.3, 1e-5, 0.0), 0.1, 0.01, 1e-9, 60)
    table = TunedGrids("sha-of-weights", [grid])
    table.add(TunedGrid("unipc", 3, (1.0, 0.2, 1e-5, 0.0), 0.1, 0.005, 1e-9, 60))  # replaces the first
    path = table.save(tmp_path / "tuned_grids.json")
    loaded = TunedGrids.load(path, "sha-of-weights")
    assert loaded == table and loaded.get("unipc", 3).times == (1.0, 0.2, 1e-5, 0.0)
    assert TunedGrids.load(path, "other-weights") is None  # tuned for other weights: never used
    assert TunedGrids.load(tmp_path / "missing.json", "sha-of-weights") is None
    payload = json.loads(path.read_text())
    payload["grids"][0]["times"] = [1.0, 0.2, 0.3, 0.0]
    path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="difflab tune"):
        TunedGrids.load(path, "sha-of-weights")
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid"):
        TunedGrids.load(path, "sha-of-weights")
