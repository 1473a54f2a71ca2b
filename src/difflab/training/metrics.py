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

from difflab.evaluation.figures import save_loss_curve, save_metric_curves
from difflab.evaluation.report import COLUMNS


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
