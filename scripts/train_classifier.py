"""Train the small feature classifiers shipped in ``src/difflab/assets`` (deterministic, CPU).

    OMP_NUM_THREADS=1 python scripts/train_classifier.py digits   # ~1 min
    OMP_NUM_THREADS=1 python scripts/train_classifier.py mnist    # ~10 min, needs ../shared/data/mnist

Trains ``SmallCNN`` on the dataset's train split with random shifts (up to ``shift`` pixels),
AdamW and a cosine learning-rate decay; all randomness comes from one seeded generator (and
the seeded default generator for the initial weights), on one thread. Prints the test-split
accuracy and writes it into the weights file's metadata, which ``tests/test_metrics.py``
checks again.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from difflab.data import load_dataset
from difflab.evaluation.classifier import ClassifierConfig, SmallCNN, accuracy, asset_path, save_classifier

RECIPES = {  # dataset -> (epochs, batch size, learning rate, max shift in pixels)
    "digits": (60, 64, 2e-3, 1),
    "mnist": (5, 128, 2e-3, 2),
}
ARCHITECTURES = {  # dataset -> (width, conv blocks): 8 -> 2 pixels, 28 -> 3 pixels before pooling
    "digits": (32, 2),
    "mnist": (24, 3),
}


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``shift`` pixels (edge padding with -1, i.e. background)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train(name: str, seed: int) -> tuple[SmallCNN, float]:
    epochs, batch_size, lr, shift = RECIPES[name]
    train_set, test_set = load_dataset(name, split="train"), load_dataset(name, split="test")
    torch.manual_seed(seed)  # initial weights
    generator = torch.Generator().manual_seed(seed)  # order and augmentation
    width, blocks = ARCHITECTURES[name]
    model = SmallCNN(ClassifierConfig(dataset=name, image_size=train_set.image_size[0], width=width, blocks=blocks))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_set) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        for start in range(0, len(order), batch_size):
            x, y = train_set.batch(order[start : start + batch_size])
            loss = F.cross_entropy(model(random_shift(x, shift, generator)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}", flush=True)
    return model, accuracy(model.eval(), test_set.images, test_set.labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped asset)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, acc = train(args.dataset, args.seed)
    out = args.out or asset_path(args.dataset)
    epochs, batch_size, lr, shift = RECIPES[args.dataset]
    save_classifier(model, out, test_accuracy=f"{acc:.4f}", seed=str(args.seed),
                    recipe=f"epochs={epochs} batch={batch_size} lr={lr} shift={shift} AdamW cosine")
    print(f"{args.dataset}: test accuracy {acc:.4f}; wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
