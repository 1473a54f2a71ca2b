"""Tokenizers: encoder/decoder pairs between images and a smaller latent grid, as their own layer.

They sit between the networks (``difflab.nn``: the AE/KL-VAE tokenizers are networks) and the
objectives that train in their latent space. ``PatchPCA`` is fitted to data; ``ConvAutoencoder``
(``difflab.nn``) is trained; ``save_tokenizer``/``load_tokenizer`` store any of them without
pickles, and ``TOKENIZERS`` lists every kind. The ``Tokenizer`` protocol that processes use is
``difflab.processes.Tokenizer``.
"""

from difflab.nn.autoencoder import AutoencoderConfig, ConvAutoencoder, fit_autoencoder
from difflab.processes.tokenizers import Tokenizer
from difflab.tokenizers.pca import PatchPCA, patchify, unpatchify
from difflab.tokenizers.saved import (
    TOKENIZERS,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_saved,
    unfitted_tokenizer,
)

__all__ = [
    "TOKENIZERS",
    "AutoencoderConfig",
    "ConvAutoencoder",
    "PatchPCA",
    "Tokenizer",
    "fit_autoencoder",
    "load_tokenizer",
    "patchify",
    "save_tokenizer",
    "tokenizer_from_saved",
    "unfitted_tokenizer",
    "unpatchify",
]
