"""difflab: diffusion generative models in one core.

A forward process is Gaussian and diagonal in an orthonormal basis, u = B(x):
``u_t = alpha_t * u_0 + sigma_t * eps`` per coefficient. Identity basis with scalar alpha
is DDPM/VP diffusion; the DCT basis with per-frequency alpha is blurring diffusion.
"""

__version__ = "0.1.0"

from difflab.processes import BlurringDiffusion, GaussianDiffusion, build_process  # noqa: E402
from difflab.samplers import sample, tune_grid  # noqa: E402
from difflab.likelihood import nll  # noqa: E402
from difflab.models import load_model, save_model  # noqa: E402

__all__ = ["BlurringDiffusion", "GaussianDiffusion", "__version__", "build_process", "load_model", "nll", "sample",
           "save_model", "tune_grid"]
