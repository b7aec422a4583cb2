"""``evaluate`` metric modules shipped with the package, loadable offline by path.

``evaluate.load("accuracy")`` fetches a script from the Hub; these work with ``HF_HUB_OFFLINE=1``:

* ``accuracy``: accuracy and macro F1.
* ``adaptive_efficiency``: average depth (exit layer, steps, frames or tokens used) and theoretical speedup.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "adaptive_efficiency")


def metric_path(name: str) -> str:
    """The folder of a packaged metric, for ``evaluate.load(path)``.

    Args:
        name: ``"accuracy"`` or ``"adaptive_efficiency"``.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown packaged metric {name!r}; available: {', '.join(METRIC_NAMES)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of a packaged metric by its local path (no Hub access).

    Args:
        name: ``"accuracy"`` or ``"adaptive_efficiency"``.
        **kwargs: Passed to ``evaluate.load`` (``experiment_id``, ``num_process``, ``process_id``, ...).
    """
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRIC_NAMES", "load_metric", "metric_path"]
