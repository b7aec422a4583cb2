"""Exact binomial tail bounds for Learn-then-Test, from ``scipy.stats``.

Calibration losses are 0/1 per sample (a prediction is wrong where full compute was right, or it differs from full
compute), so the number of losses in ``n`` exchangeable rows is binomial and the Clopper-Pearson bound is exact:
no looser concentration inequality (Hoeffding, Hoeffding-Bentkus) is needed, and none is tighter for 0/1 losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def binomial_upper_bound(losses: int | Sequence[int], num_samples: int, delta: float) -> float | list[float]:
    """One-sided Clopper-Pearson upper confidence bound on a loss rate.

    The true rate is at most the returned value with probability at least ``1 - delta`` over the sample.

    Args:
        losses: Rows with loss 1 (or a sequence of such counts: one bound each).
        num_samples: Rows in the sample (> 0).
        delta: Allowed error probability, in (0, 1).
    """
    counts = np.asarray(losses, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = stats.beta.ppf(1.0 - delta, counts + 1, np.maximum(num_samples - counts, 1e-300))
    bound = np.where(counts >= num_samples, 1.0, bound)
    return bound.tolist() if counts.ndim else float(bound)


def binomial_p_value(losses: int | Sequence[int], num_samples: int, epsilon: float) -> float | list[float]:
    """Exact p-value of the null hypothesis "the loss rate exceeds ``epsilon``" (small: the rate is below).

    It is ``P(Binomial(n, epsilon) <= losses)``; rejecting when it is at most ``delta`` is the same test as
    :func:`binomial_upper_bound` ``<= epsilon`` (the Clopper-Pearson duality), without rounding at the boundary.

    Args:
        losses: Rows with loss 1 (or a sequence of such counts).
        num_samples: Rows in the sample (> 0).
        epsilon: The risk budget, in [0, 1).
    """
    p_value = stats.binom.cdf(np.asarray(losses), num_samples, epsilon)
    return p_value.tolist() if np.ndim(p_value) else float(p_value)


def rows_needed(epsilon: float, delta: float) -> int | None:
    """Fewest rows that can certify a risk of at most ``epsilon`` at level ``delta`` (with zero losses).

    With no loss in ``n`` rows the p-value is ``(1 - epsilon) ** n``, so ``n >= log(delta) / log(1 - epsilon)``.

    Args:
        epsilon: The risk budget, in [0, 1).
        delta: The error probability of the test, in (0, 1).

    Returns:
        The row count, or ``None`` for ``epsilon == 0`` (no finite sample certifies a zero risk).
    """
    if epsilon <= 0.0:
        return None
    return math.ceil(math.log(delta) / math.log1p(-epsilon) - 1e-12)
