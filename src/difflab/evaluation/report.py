"""Write evaluation rows as a markdown table, JSON, and a quality-versus-NFE plot.

A row is a dict from ``evaluate`` / ``sweep``: ``sampler``, ``steps``, the metric values
(``fd``, ``kid`` +- ``kid_std``, ``is`` +- ``is_std``, ``nll`` +- ``nll_se``), ``nfe`` and the
protocol (``protocol_text`` is printed in the table beside the numbers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (  # (header, value key, error key)
    ("FD", "fd", None),
    ("KID", "kid", "kid_std"),
    ("IS", "is", "is_std"),
    ("precision", "precision", None),
    ("recall", "recall", None),
    ("NLL (bits/dim)", "nll", "nll_se"),
)
PLOTTED = (("fd", "FD"), ("kid", "KID"), ("is", "IS"))


def format_value(row: dict[str, Any], key: str, err: str | None) -> str:
    """'1.234' or '1.234 ± 0.056', or '' when the row lacks the metric."""
    if key not in row:
        return ""
    value = f"{row[key]:.4g}"
    if err is not None and err in row and not math.isnan(row[err]):
        value += f" ± {row[err]:.2g}"
    return value


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: sampler, steps, NFE, the metrics present in any row, protocol."""
    columns = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    header = ["sampler", "steps", "NFE", *(c[0] for c in columns), "protocol"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        nfe = str(r.get("nfe", "")) if r.get("sampler", "-") != "-" else "-"
        steps = str(r.get("steps", "")) if r.get("sampler", "-") != "-" else "-"
        cells = [str(r.get("sampler", "-")), steps, nfe, *(format_value(r, k, e) for _, k, e in columns),
                 r.get("protocol_text", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_json(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """All rows (numbers and protocol dicts) as JSON."""
    path = Path(path)
    path.write_text(json.dumps({"rows": list(rows)}, indent=2, default=str) + "\n")
    return path


def plot_title(protocol: dict[str, Any]) -> str:
    """The protocol shared by every point of a sweep (all but sampler and steps)."""
    ema = {True: "EMA", False: "raw weights", None: "weights n/a"}[protocol.get("ema")]
    return (f"{protocol['num_samples']} samples per point, seed {protocol['seed']}, {ema}, "
            f"{protocol['features']} features vs {protocol['reference']}")


def plot_quality_vs_nfe(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One panel per sample metric present: value against NFE (log axis), a line per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampled = [r for r in rows if r.get("sampler", "-") != "-"]
    metrics = [(k, label) for k, label in PLOTTED if any(k in r for r in sampled)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], metrics):
        for sampler in dict.fromkeys(r["sampler"] for r in sampled):
            pts = sorted((r["nfe"], r[key]) for r in sampled if r["sampler"] == sampler and key in r)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=sampler)
        ax.set_xscale("log")
        nfes = sorted({r["nfe"] for r in sampled})
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.minorticks_off()
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if sampled and "protocol" in sampled[0]:
        fig.suptitle(plot_title(sampled[0]["protocol"]), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, name: str = "eval") -> dict[str, Path]:
    """``<name>.md``, ``<name>.json`` and ``<name>_vs_nfe.png`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{name}.md"
    md.write_text(markdown_table(rows))
    paths = {"markdown": md, "json": write_json(rows, out / f"{name}.json")}
    if any(r.get("sampler", "-") != "-" for r in rows):
        paths["plot"] = plot_quality_vs_nfe(rows, out / f"{name}_vs_nfe.png")
    return paths
