"""Build a run's data and model from a ``TrainConfig``, and check they fit.

Everything here happens before a run writes anything, so a dataset whose images do not
match the network (channels, size, labels) fails with one line and leaves no files.
"""

from __future__ import annotations

from typing import Any

from difflab.data import ImageDataset
from difflab.errors import ConfigError, DataError, DifflabError
from difflab.models import FAMILIES, GenerativeModel, build_model
from difflab.nn import MLPConfig
from difflab.training.config import TrainConfig, model_family


def model_config(config: TrainConfig, image_shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``config()`` of the model a run trains on images of ``image_shape``, as its family
    reads it from the run's sections (``GenerativeModel.config_from_sections``)."""
    return FAMILIES[model_family(config)].config_from_sections(config.to_dict(), image_shape)


def build_components(config: TrainConfig, dataset: ImageDataset | None = None
                     ) -> tuple[ImageDataset, GenerativeModel]:
    """(dataset, model with network weights seeded by ``optim.seed``), checked to fit; the
    dataset is ``config.data`` loaded unless one is given."""
    dataset = config.data.load() if dataset is None else dataset
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name} has no images; check data.path")
    try:
        model = build_model(model_family(config), model_config(config, image_shape(dataset)), seed=config.optim.seed)
    except DifflabError:
        raise
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        raise ConfigError(f"cannot build the network from the network section: {err}") from None
    check_network_fits_data(config, dataset, model)
    return dataset, model


def check_network_fits_data(config: TrainConfig, dataset: ImageDataset, model: GenerativeModel) -> None:
    """``ConfigError``/``DataError`` unless the model's network maps the tensors it sees (the
    images, or a tokenizer's latents: ``model.network_shape()``) to their shape."""
    net = config.network
    c, h, w = model.network_shape()
    where = f"data {dataset.name} has images of shape (C, H, W) = {tuple(dataset.images.shape[1:])}"
    latent = (c, h, w) != tuple(dataset.images.shape[1:])
    if latent:
        where += f", whose latents the network sees have shape ({c}, {h}, {w})"
    source = "the tokenizer's latent channels" if latent else "or data.channels"
    if isinstance(net, MLPConfig) and net.in_features != c * h * w:
        raise ConfigError(f"network.in_features={net.in_features} but {where}; set network.in_features: {c * h * w}")
    if not isinstance(net, MLPConfig):
        if net.in_channels != c:
            raise ConfigError(f"network.in_channels={net.in_channels} but {where}; "
                              f"set network.in_channels: {c} ({source})")
        c_out = model.network_output_channels()
        if getattr(net, "out_channels", None) not in ((None, c) if c_out == c else (c_out,)):
            raise ConfigError(f"network.out_channels={net.out_channels} but the {model.family} model's network "
                              f"predicts {c_out} channel(s); set network.out_channels: {c_out if c_out != c else 'null'}")
    num_classes = getattr(net, "num_classes", None)
    if num_classes is not None:
        if dataset.labels is None:
            raise DataError(f"network.num_classes={num_classes} needs labels but {dataset.name} has none; "
                            "set network.num_classes: null (or data.class_subfolders: true for folders)")
        if dataset.num_classes is not None and dataset.num_classes > num_classes:
            raise ConfigError(f"network.num_classes={num_classes} but {dataset.name} has {dataset.num_classes} "
                              f"classes; set network.num_classes: {dataset.num_classes}")
    model.dry_run(where)


def image_shape(dataset: ImageDataset) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's images."""
    c, h, w = dataset.images.shape[1:]
    return int(c), int(h), int(w)
