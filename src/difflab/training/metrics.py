"""The training log: one JSON object per line in ``metrics.jsonl``, and its PNG plots.

Each line has ``step`` (the number of optimizer steps done) and either ``loss`` (the mean
training loss over the steps since the previous loss line, plotted in loss.png) or ``eval``
(numbers from a periodic evaluation, with its ``protocol``, plotted in eval.png). On resume the lines after the
checkpoint's step are dropped, so a resumed run's log equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from difflab.evaluation.figures import save_loss_curve, save_metric_curves
from difflab.evaluation.report import COLUMNS


class LossWindow:
    """The training losses since the last log line, summed on the device (no host sync per step):
    the total and each named loss (a VAE's reconstruction and KL, a GAN's D and G terms)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.total = torch.zeros((), device=device)
        self.terms: dict[str, torch.Tensor] = {}
        self.count = 0  # training steps in the window

    def add(self, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        """One update's summed loss and its named per-example losses (their batch means are summed)."""
        self.total = self.total + total.detach().float()
        for name, value in losses.items():
            self.terms[name] = self.terms.get(name, 0.0) + value.detach().float().mean()

    def means(self, reduce: Any = None) -> dict[str, float | None]:
        """{"loss": the total, name: ...} averaged over the window's steps (None if it has none);
        ``reduce`` averages a tensor over processes (None for one process)."""
        sums = {"loss": self.total, **self.terms}
        if reduce is not None:
            sums = {k: reduce(torch.as_tensor(v, device=self.device).clone()) for k, v in sums.items()}
        return {k: float(v) / self.count if self.count else None for k, v in sums.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": float(self.total), "count": self.count, "terms": {k: float(v) for k, v in self.terms.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = torch.tensor(float(state["loss_sum"]), device=self.device)
        self.count = int(state["count"])
        self.terms = {k: torch.tensor(float(v), device=self.device) for k, v in state.get("terms", {}).items()}


class MetricsLog:
    """Append-only JSON-lines log at ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one line (flushed immediately, so a killed run keeps its log)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """All complete, parseable lines (a line cut by a kill is ignored)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Keep only the lines with ``step <= step`` (rewritten atomically)."""
        kept = [r for r in self.read() if isinstance(r.get("step"), int) and r["step"] <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def plot_loss_curve(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """PNG of the logged loss against the step; None when there is nothing to plot."""
    points = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), float) and r["loss"] > 0]
    if not points:
        return None
    steps, losses = zip(*points)
    return save_loss_curve(list(steps), list(losses), path)


def plot_eval_curves(records: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """PNG of each evaluated metric (FD, KID, IS, NLL, with error bars) against the step; None without eval lines."""
    evals = [(r["step"], r["eval"]) for r in records if isinstance(r.get("eval"), dict)]
    curves = {}
    for label, key, err in COLUMNS:
        points = [(step, e[key], e.get(err, 0.0) if err else 0.0) for step, e in evals if key in e]
        if points:
            steps, values, errors = zip(*points)
            curves[label] = (list(steps), list(values), list(errors) if err else None)
    if not curves:
        return None
    protocol = next((r.get("protocol", "") for r in reversed(records) if "eval" in r), "")
    return save_metric_curves(curves, path, title=protocol)
