"""The accuracy-against-speedup figures of the ``--plot`` options (CLI commands and the video evaluation).

matplotlib is optional (``pip install 'adaptive-hf[plot]'``) and imported only when a figure is drawn, with the
non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MISSING_MATPLOTLIB = "--plot needs matplotlib: pip install 'adaptive-hf[plot]'."


@contextmanager
def speedup_figure(
    path: str,
    xlabel: str,
    title: str,
    title_fontsize: float | None = None,
    missing_error: type[Exception] = ImportError,
    ylabel: str = "accuracy",
) -> Iterator[Any]:
    """Yields the axes of a new accuracy-vs-speedup figure; on leaving the block, labels it and saves it as a PNG.

    Args:
        path: Output PNG path (its folder is created).
        xlabel: Label of the speedup axis.
        title: Figure title.
        title_fontsize: Font size of the title; ``None`` = matplotlib's default.
        missing_error: Exception class raised (with an install hint) when matplotlib is not installed.
        ylabel: Label of the accuracy axis.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise missing_error(MISSING_MATPLOTLIB) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    try:
        yield axes
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if title_fontsize is None:
            axes.set_title(title)
        else:
            axes.set_title(title, fontsize=title_fontsize)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    finally:
        plt.close(figure)


def plot_sweep(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """Draws a knob sweep (accuracy against theoretical speedup) to a PNG, the full-compute row as a line.

    Args:
        rows: The sweep's rows (``setting``, ``accuracy``, ``theoretical_speedup``), the full-compute one first.
        path: Output PNG path.
        title: Figure title.
    """
    xlabel = "theoretical speedup over full compute (x)"
    with speedup_figure(path, xlabel, title, title_fontsize=9) as axes:
        points = sorted(rows[1:], key=lambda r: r["theoretical_speedup"])
        axes.plot([r["theoretical_speedup"] for r in points], [r["accuracy"] for r in points], "o-", label="sweep")
        axes.axhline(rows[0]["accuracy"], color="gray", linestyle=":", label=rows[0]["setting"])
