"""`EvaluationReport`: what `lrp_triton.evaluate` returns; a markdown table, JSON and a PNG of the curves.

Per method: ABPC and the two areas (mean and standard error over the examples, see
`lrp_triton.evaluation.curves`), the mean attribution time per example, and the mean MoRF / LeRF
curves resampled on a common grid of perturbed fractions (for the plot). The PNG is drawn with
matplotlib's object API on the Agg canvas (the `plot` extra), never touching pyplot's backend.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class MethodScores:
    """One method's results over the data set (areas of the curves as the report's `normalize` says)."""

    method: str
    abpc: float
    abpc_se: float
    auc_morf: float
    auc_morf_se: float
    auc_lerf: float
    auc_lerf_se: float
    seconds: float  # mean attribution time per example
    morf_curve: list[float] = field(default_factory=list)  # mean curve on the report's grid
    lerf_curve: list[float] = field(default_factory=list)
    per_example: list[dict] = field(default_factory=list)  # {"abpc", "auc_morf", "auc_lerf"} per example


@dataclass
class EvaluationReport:
    """Faithfulness of several attribution methods on one data set (see `lrp_triton.evaluate`)."""

    methods: list[MethodScores]
    grid: list[float]
    n_examples: int
    perturbation: str
    step: int | float
    normalize: str  # "none": raw scores; "unperturbed": each curve divided by |its unperturbed score|
    model_name: str = ""

    def __getitem__(self, method: str) -> MethodScores:
        for m in self.methods:
            if m.method == method:
                return m
        raise KeyError(f"no method {method!r} in this report; it has {', '.join(m.method for m in self.methods)}")

    @property
    def abpc(self) -> dict[str, float]:
        """{method: mean ABPC}."""
        return {m.method: m.abpc for m in self.methods}

    @property
    def curve_label(self) -> str:
        return "explained score / |unperturbed score|" if self.normalize == "unperturbed" else "explained score (raw)"

    def to_markdown(self, path=None) -> str:
        """The table: ABPC, AUC(MoRF), AUC(LeRF) (mean +- standard error) and time per example."""
        lines = [f"{self.model_name or 'model'}: {self.n_examples} examples, perturbation {self.perturbation!r}, "
                 f"step {self.step}, {self.curve_label}", "",
                 "| method | ABPC | AUC MoRF | AUC LeRF | attribution time / example |", "|---|---|---|---|---|"]
        for m in self.methods:
            lines.append(f"| {m.method} | {m.abpc:.3f} ± {m.abpc_se:.3f} | {m.auc_morf:.3f} ± {m.auc_morf_se:.3f} | "
                         f"{m.auc_lerf:.3f} ± {m.auc_lerf_se:.3f} | {m.seconds * 1e3:.1f} ms |")
        text = "\n".join(lines) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path=None) -> dict:
        """Everything in the report as a JSON-ready dict (written to `path` when given)."""
        data = self.to_dict()
        if path is not None:
            Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")
        return data

    def to_png(self, path, dpi: int = 120) -> None:
        """The mean MoRF (solid) and LeRF (dashed) curves of every method (needs matplotlib)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("to_png needs matplotlib, which is not installed; install it with "
                              "`pip install matplotlib` (or `pip install 'lrp_triton[plot]'`)") from exc
        fig = Figure(figsize=(10, 4.5), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        colors = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f", "#8c564b", "#e377c2"]
        for i, m in enumerate(self.methods):
            color = colors[i % len(colors)]
            ax.plot(self.grid, m.morf_curve, color=color, linestyle="-", label=f"{m.method} MoRF (ABPC {m.abpc:.2f})")
            ax.plot(self.grid, m.lerf_curve, color=color, linestyle="--", label=f"{m.method} LeRF")
        ax.set_xlabel("fraction of features perturbed")
        ax.set_ylabel(self.curve_label)
        ax.set_title(f"{self.model_name or 'model'}: perturbation curves ({self.n_examples} examples, "
                     f"{self.perturbation})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.savefig(path, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
