"""The accuracy-against-speedup figure shared by the CLI's and the video evaluation's ``--plot``.

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
