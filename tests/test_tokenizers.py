"""Patch-wise PCA tokenizer, latent diffusion and the l-DAE noise levels: exact properties."""

from __future__ import annotations

import math

import pytest
import torch

import difflab
from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.processes import DAEDiffusion, GaussianDiffusion, LatentDiffusion, build_process
from difflab.processes.analytic import GaussianData
from difflab.tokenizers import PatchPCA, load_tokenizer, patchify, save_tokenizer, unpatchify


def correlated_images(n: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (float64) so that patch covariances have a spread of eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, height, width, generator=g, dtype=torch.float64)
    x = x + torch.roll(x, 1, dims=-1) + torch.roll(x, 1, dims=-2)
    return x + 0.3 * torch.arange(channels, dtype=torch.float64)[:, None, None]


# --- patches ---------------------------------------------------------------------------------
def test_patchify_unpatchify_are_inverse_on_non_square_images():
    x = correlated_images(2, 3, 12, 20)
    grid = patchify(x, 4)
    assert grid.shape == (2, 48, 3, 5)
    assert torch.equal(unpatchify(grid, 4), x)
    # Channel layout c p^2 + i p + j: the vector at grid cell (1, 3) is that patch, channel-major.
    assert torch.equal(grid[:, :, 1, 3], x[:, :, 4:8, 12:16].reshape(2, -1))


def test_patchify_rejects_indivisible_sizes():
    with pytest.raises(DataError, match="multiples of 4"):
        patchify(torch.zeros(1, 1, 10, 8), 4)


# --- PCA -------------------------------------------------------------------------------------
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_round_trip_is_exact_with_all_components(center, whiten):
    x = correlated_images(16, 3, 8, 12)
    pca = PatchPCA.fit(x, patch_size=4, components=48, center=center, whiten=whiten)
    assert torch.allclose(pca.decode(pca.encode(x)), x, atol=1e-9)


def test_pca_components_are_orthonormal_and_sorted():
    pca = PatchPCA.fit(correlated_images(16, 2, 8, 8), patch_size=4, components=5)
    eye = torch.eye(pca.patch_dim, dtype=torch.float64)
    assert torch.allclose(pca.basis @ pca.basis.T, eye, atol=1e-10)
    assert torch.all(pca.variances[:-1] >= pca.variances[1:])


def test_pca_latent_channels_are_decorrelated_with_the_eigenvalues_as_variances():
    x = correlated_images(32, 1, 8, 8)
    pca = PatchPCA.fit(x, patch_size=4, components=6)
    u = pca.encode(x).permute(0, 2, 3, 1).reshape(-1, 6)  # (patches, d)
    cov = u.T @ u / u.shape[0]  # data are centred by the fitted mean
    assert torch.allclose(cov, torch.diag(pca.variances[:6]), atol=1e-9)
    white = PatchPCA.fit(x, patch_size=4, components=6, whiten=True, center=True)
    w = white.encode(x).permute(0, 2, 3, 1).reshape(-1, 6)
    assert torch.allclose(w.var(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("center", [True, False])
def test_pca_with_fewer_components_is_the_orthogonal_projection(center):
    x = correlated_images(16, 3, 8, 12)
    pca = PatchPCA.fit(x, patch_size=4, components=7, center=center)
    y = correlated_images(4, 3, 8, 12, seed=1)  # unseen images
    recon = pca.decode(pca.encode(y))
    v = pca.basis[:7]
    mu = pca.mean[None, :, None, None]
    # P(patch - mu) + mu with P = V^T V.
    expected = torch.einsum("kD,kE,bEhw->bDhw", v, v, patchify(y, 4) - mu) + mu
    assert torch.allclose(patchify(recon, 4), expected, atol=1e-10)
    # Projection: idempotent, residual orthogonal to every kept component, Pythagoras holds.
    assert torch.allclose(pca.decode(pca.encode(recon)), recon, atol=1e-10)
    resid = patchify(y - recon, 4)
    assert torch.allclose(torch.einsum("kD,bDhw->bkhw", v, resid), torch.zeros((), dtype=torch.float64), atol=1e-10)
    centred = patchify(y, 4) - mu
    assert torch.allclose(centred.pow(2).sum(), pca.encode(y).pow(2).sum() + resid.pow(2).sum())


def test_pca_rejects_bad_components_and_shapes():
    x = correlated_images(4, 1, 8, 8)
    with pytest.raises(ConfigError, match="components=17"):
        PatchPCA.fit(x, patch_size=4, components=17)
    pca = PatchPCA.fit(x, patch_size=4, components=3)
    with pytest.raises(DataError, match="1-channel"):
        pca.latent_shape((1, 3, 8, 8))
    with pytest.raises(DataError, match=r"\(B, 3, h, w\)"):
        pca.decode(torch.zeros(1, 4, 2, 2))


def test_saved_and_reloaded_pca_gives_identical_latents(tmp_path):
    x = correlated_images(8, 3, 8, 8)
    pca = PatchPCA.fit(x, patch_size=4, components=9, whiten=True)
    loaded = load_tokenizer(save_tokenizer(pca, tmp_path / "tok"))
    assert isinstance(loaded, PatchPCA) and loaded.config() == pca.config()
    assert torch.equal(loaded.encode(x), pca.encode(x))
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path / "missing")


# --- Gaussian closed forms in a PCA latent basis ---------------------------------------------
def pca_latent_setup(components: int = 5):
    pca = PatchPCA.fit(correlated_images(16, 1, 8, 12), patch_size=4, components=components)
    process = LatentDiffusion(GaussianDiffusion(), pca)
    shape = process.latent_shape((1, 1, 8, 12))[1:]  # (d, 2, 3)
    g = torch.Generator().manual_seed(3)
    data = GaussianData(mean=torch.randn(shape, generator=g, dtype=torch.float64),
                        var=0.2 + torch.rand(shape, generator=g, dtype=torch.float64))
    return pca, process, data


def test_diffused_pca_latents_have_the_closed_form_marginal():
    pca, process, data = pca_latent_setup()
    g = torch.Generator().manual_seed(0)
    u0 = data.sample(20000, process, generator=g)  # latents, float64
    x0 = pca.decode(u0)  # images on the PCA subspace
    assert torch.allclose(process.encode(x0), u0, atol=1e-10)
    t = torch.full((u0.shape[0],), 0.4, dtype=torch.float64)
    u_t = process.diffuse(process.encode(x0), t, torch.randn(u0.shape, generator=g, dtype=torch.float64))
    mean, var = data.marginal(process, t[:1])
    assert torch.allclose(u_t.mean(0), mean[0], atol=0.04)
    assert torch.allclose(u_t.var(0), var[0], rtol=0.06)


def test_sampler_with_the_closed_form_denoiser_recovers_the_latent_gaussian():
    pca, process, data = pca_latent_setup()
    g = torch.Generator().manual_seed(1)
    n = 6000
    u = difflab.sample(data.model(process, "eps"), process, (n, *data.mean.shape), sampler="ddim",
                       steps=100, generator=g, dtype=torch.float64)
    assert torch.allclose(u.mean(0), data.mean, atol=0.05)
    assert torch.allclose(u.var(0), data.var, rtol=0.08)
    # In pixel space: mean decode(m) and per-patch covariance V^T diag(v) V.
    x = process.decode(u)
    assert torch.allclose(x.mean(0), pca.decode(data.mean[None])[0], atol=0.05)
    v = pca.basis[: pca.components]
    cov = torch.einsum("kD,khw,kE->hwDE", v, data.var, v)  # (h, w, D, D)
    emp = patchify(x - x.mean(0), 4)  # (n, D, h, w)
    emp_cov = torch.einsum("nDhw,nEhw->hwDE", emp, emp) / n
    assert torch.allclose(emp_cov, cov, atol=0.06)


def test_latent_process_config_names_the_inner_process_and_tokenizer():
    pca, process, _ = pca_latent_setup(components=3)
    cfg = process.config()
    assert cfg["kind"] == "latent" and build_process(cfg["process"]) == GaussianDiffusion()
    assert cfg["tokenizer"] == {"kind": "patch_pca", **pca.config()}
    with pytest.raises(ConfigError, match="cannot wrap"):
        LatentDiffusion(process, pca)


# --- l-DAE noise levels ------------------------------------------------------------------------
def test_dae_noise_levels_follow_the_paper():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    alpha, sigma = DAEDiffusion("linear_gamma2").alpha_sigma(t, (3, 1, 4, 4))
    assert alpha.shape == (3, 1, 1, 1)
    assert torch.allclose(alpha.flatten() ** 2, 1 - t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones((), dtype=torch.float64))
    alpha, sigma = DAEDiffusion("linear_sigma").alpha_sigma(t, (3, 2))
    assert torch.all(alpha == 1) and torch.allclose(sigma.flatten(), math.sqrt(2) * t)
    alpha, sigma = DAEDiffusion("single").alpha_sigma(t, (3, 2))
    assert torch.allclose(sigma, torch.full_like(sigma, 3 ** -0.5))
    # Cleaner than DDPM's linear betas at every interior t (the paper's Fig. 3).
    ddpm = GaussianDiffusion("linear")
    assert torch.all(DAEDiffusion().logsnr(t, (3, 1)) > ddpm.logsnr(t, (3, 1)))


def test_dae_process_config_round_trip_and_validation():
    p = DAEDiffusion("linear_sigma", sigma_max=2.0)
    assert build_process(p.config()) == p
    with pytest.raises(ConfigError, match="noise="):
        DAEDiffusion("cosine")  # type: ignore[arg-type]


# --- the l-DAE objective --------------------------------------------------------------------------
def ldae_setup():
    from difflab.objectives import ldae_loss

    x0 = correlated_images(6, 3, 8, 8, seed=5)
    pca = PatchPCA.fit(correlated_images(32, 3, 8, 8), patch_size=4, components=6)
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    noise = torch.randn(pca.latent_shape(tuple(x0.shape)), generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    return ldae_loss, x0, pca, t, noise


def test_ldae_loss_is_zero_for_the_oracle_in_every_space():
    ldae_loss, x0, pca, t, noise = ldae_setup()
    oracles = {"latent": lambda u, tt: pca.encode(x0), "inverse_pca": lambda z, tt: pca.decode(pca.encode(x0)),
               "image": lambda z, tt: x0}
    for space, oracle in oracles.items():
        loss = ldae_loss(oracle, DAEDiffusion(), pca, x0, space=space, t=t, noise=noise)
        assert loss.shape == (6,) and torch.allclose(loss, torch.zeros((), dtype=torch.float64), atol=1e-20)


def test_ldae_image_loss_weights_the_pca_residual_as_eq4():
    ldae_loss, x0, pca, t, noise = ldae_setup()
    seen = {}

    def model(z, tt):
        seen["input"] = z
        return torch.zeros_like(z)

    full = ldae_loss(model, DAEDiffusion(), pca, x0, space="image", weighting="uniform", residual_weight=1.0,
                     t=t, noise=noise)
    assert torch.allclose(full, x0.pow(2).flatten(1).mean(1))  # Parseval: the full basis is orthonormal
    kept = ldae_loss(model, DAEDiffusion(), pca, x0, space="image", weighting="uniform", residual_weight=0.0,
                     t=t, noise=noise)
    coords = pca.full_coordinates(x0)[:, :6]
    assert torch.allclose(kept, coords.pow(2).flatten(1).sum(1) / x0[0].numel())
    # The network sees the noisy latent projected back to pixels: a point of the PCA subspace.
    assert torch.allclose(pca.decode(pca.encode(seen["input"])), seen["input"], atol=1e-10)
    weighted = ldae_loss(model, DAEDiffusion(), pca, x0, space="image", t=t, noise=noise)
    assert torch.allclose(weighted, (1 - t) * ldae_loss(model, DAEDiffusion(), pca, x0, space="image",
                                                        weighting="uniform", t=t, noise=noise))


def test_dae_weight_is_gamma2_or_inverse_one_plus_sigma2():
    from difflab.objectives import dae_weight

    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    a, s = DAEDiffusion("linear_gamma2").alpha_sigma(t, (2, 1))
    assert torch.allclose(dae_weight(a, s).flatten(), 1 - t)
    a, s = DAEDiffusion("linear_sigma").alpha_sigma(t, (2, 1))
    assert torch.allclose(dae_weight(a, s).flatten(), 1 / (1 + 2 * t**2))
