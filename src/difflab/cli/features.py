"""``difflab features``: feature statistics of a dataset, for FD without the reference images.

    difflab features stats --data mnist --split test --out mnist-test.npz
    difflab features stats --data folder --path ~/images --image-size 64 --features inception \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth --out mine.npz
    difflab eval --checkpoint runs/mnist-gauss --metrics fd --ref mnist-test.npz

``stats`` writes the mean ``mu`` and covariance ``sigma`` of the dataset's features as an ``.npz``
in the layout pytorch-fid and clean-fid read and write (``difflab.evaluation.statistics``).
The extractor defaults to the dataset's (digits-cnn, mnist-cnn, else inception).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("features", help="feature statistics of a dataset (for FD against an .npz)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="write mu and sigma of a dataset's features to an .npz")
    stats.add_argument("--data", required=True, help="dataset: digits, mnist, cifar10 or folder")
    stats.add_argument("--path", help="file or folder to read (required for folder)")
    stats.add_argument("--split", default="test", choices=["train", "test"], help="split (default test)")
    stats.add_argument("--image-size", type=int, help="resize the shorter side and centre-crop to this size")
    stats.add_argument("--channels", type=int, choices=[1, 3], help="convert to 1 or 3 channels")
    stats.add_argument("--features", help="digits-cnn, mnist-cnn or inception (default: by dataset)")
    stats.add_argument("--inception-weights", help="local Inception-v3 FID weights (for --features inception)")
    stats.add_argument("--out", required=True, help="the .npz to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from difflab.data import DataConfig
    from difflab.errors import ConfigError
    from difflab.evaluation.features import extract, resolve_extractor
    from difflab.evaluation.statistics import FeatureStatistics

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out={out}: reference statistics are written as .npz (pytorch-fid's layout)")
    data = DataConfig(name=args.data, path=args.path, split=args.split, image_size=args.image_size,
                      channels=args.channels).load()
    extractor = resolve_extractor(args.features, data.name.partition("/")[0], inception_weights=args.inception_weights)
    features, _ = extract(extractor, data.images)
    stats = FeatureStatistics.of(features, f"{data.name} ({len(data)} images, {extractor.name})",
                                 extractor=extractor.name, fingerprint=extractor.fingerprint)
    print(f"wrote {stats.save(out)}: mu and sigma of {len(features)} x {features.shape[1]} {extractor.name} "
          f"features of {data.name}")
    return 0
