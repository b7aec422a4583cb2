"""Adaptive-computation efficiency as an ``evaluate`` metric usable offline: average depth and theoretical speedup.

Load it by path (no Hub access needed): ``adaptive_hf.metrics.load_metric("adaptive_efficiency")``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """How much of a model's compute each sample used.

``used`` is what a sample consumed, per sample: its 1-based exit layer, its halting steps, the frames or tokens it
read. ``full`` is the amount at full compute (the depth, the frame count, the sequence length). Without costs the
theoretical speedup is ``full * n / sum(used)``, which assumes every unit (layer, step, frame) costs the same.
With per-sample FLOPs (``costs``, spent, and ``full_costs``, at full compute; e.g. from ``model.exit_flops``) it
is ``sum(full_costs) / sum(costs)``, which also counts heads, routers and glance networks.
"""

_KWARGS_DESCRIPTION = """
Args:
    used (list of float): Per sample, the exit layer / steps / frames / tokens it used.
    full (float): The full depth / number of frames / tokens. Required (a ``compute`` argument).
    costs (list of float, optional): Per sample, the compute it spent (a ``compute`` argument, not batched).
    full_costs (float or list of float, optional): The compute at full depth, per sample or one value for all
        samples; required with ``costs``.
Returns:
    average_depth (float): Mean of ``used``.
    relative_depth (float): ``average_depth / full``.
    theoretical_speedup (float): Full compute divided by spent compute (see the description).
    depth_histogram (dict): Share of samples per distinct ``used`` value.
Examples:
    >>> metric = adaptive_hf.metrics.load_metric("adaptive_efficiency")
    >>> metric.compute(used=[2, 4, 6, 6], full=6)["theoretical_speedup"]
    1.3333333333333333
"""

_CITATION = ""


class AdaptiveEfficiency(evaluate.Metric):
    """Average depth (or steps, frames, tokens used) and theoretical speedup of an adaptive model."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"used": datasets.Value("float64")}),
        )

    def _compute(self, used, costs=None, full_costs=None, full=None):
        if full is None:
            raise ValueError("`full` is required: the full depth (or frame/token count) at full compute.")
        if isinstance(full, bool) or not isinstance(full, (int, float, np.integer, np.floating)) or not full > 0:
            raise ValueError(f"`full` must be a positive number; got {full!r}.")
        used = np.asarray(used, dtype=np.float64)
        if used.size == 0:
            raise ValueError("No samples: add at least one `used` value.")
        if (used < 0).any() or (used > full).any():
            raise ValueError(f"`used` values must lie in [0, full={full}]; got min {used.min()}, max {used.max()}.")
        if (costs is None) != (full_costs is None):
            raise ValueError("Pass `costs` and `full_costs` together (per-sample spent and full-depth compute).")
        if costs is not None:
            costs = np.asarray(costs, dtype=np.float64)
            full_costs = np.broadcast_to(np.asarray(full_costs, dtype=np.float64), costs.shape)
            if costs.shape != used.shape:
                raise ValueError(f"`costs` needs one value per sample ({used.size}); got shape {costs.shape}.")
            if costs.sum() <= 0:
                raise ValueError("`costs` must sum to a positive amount.")
            speedup = float(full_costs.sum() / costs.sum())
        else:
            if used.sum() <= 0:
                raise ValueError("`used` must sum to a positive amount to give a speedup.")
            speedup = float(full * used.size / used.sum())
        values, counts = np.unique(used, return_counts=True)
        histogram = {f"{v:g}": float(c / used.size) for v, c in zip(values, counts, strict=True)}
        return {
            "average_depth": float(used.mean()),
            "relative_depth": float(used.mean() / full),
            "theoretical_speedup": speedup,
            "depth_histogram": histogram,
        }
