"""Exact tail bounds for Learn-then-Test, from ``scipy.stats``.

* Disagreement with full compute is a 0/1 loss: the number of losses in ``n`` exchangeable rows is binomial, so the
  Clopper-Pearson bound is exact (:func:`binomial_upper_bound`, :func:`binomial_p_value`); no concentration
  inequality (Hoeffding, Hoeffding-Bentkus) is tighter for 0/1 losses.
* The accuracy drop against full compute is the mean of a paired {-1, 0, +1} loss (broken rows +1, fixed rows -1):
  :func:`net_drop_p_value` is an exact unconditional test on the two counts, so rows a cheap setting fixes offset
  rows it breaks. With no fixed row it is as strong as the one-sided count test (to within the 1% of the level it
  spends on the nuisance rate); with fixed rows it is much stronger.
"""

from __future__ import annotations

import functools
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


# ------------------------------------------------------------------------------------- net accuracy drop
# Share of a test's level spent on bounding the nuisance rate of fixed rows (Berger and Boos, 1994).
NUISANCE_SHARE = 0.01
_NUISANCE_GRID = 96
_TAIL_SLACK = 1e-12  # the trinomial mass left out beyond the summed range, added back to stay conservative


def _largest_broken(score: float, fixed: np.ndarray, num_samples: int, epsilon: float) -> np.ndarray:
    """Per fixed count ``c``, the largest broken count ``b`` whose score is at most ``score`` (-1: none).

    The score ``(b - c - n * epsilon) / sqrt(b + c + 1)`` rises with ``b``; with ``u = b + c + 1`` the condition
    ``u - a <= score * sqrt(u)``, ``a = 2c + 1 + n * epsilon``, holds exactly for
    ``sqrt(u) <= (score + sqrt(score ** 2 + 4a)) / 2``.
    """
    a = 2.0 * fixed + 1.0 + num_samples * epsilon
    root = (score + np.sqrt(score * score + 4.0 * a)) / 2.0
    largest = np.floor(root * root - fixed - 1.0 + 1e-9)
    return np.minimum(largest, num_samples - fixed)


@functools.lru_cache(maxsize=1 << 16)
def _net_drop_p_value(broken: int, fixed: int, num_samples: int, epsilon: float, level: float) -> float:
    n = num_samples
    gamma = NUISANCE_SHARE * level
    score = (broken - fixed - n * epsilon) / math.sqrt(broken + fixed + 1.0)
    # Fixed-row rates above this have probability <= gamma (Clopper-Pearson), so the supremum skips them.
    fixed_high = 1.0 if fixed >= n else float(stats.beta.ppf(1.0 - gamma, fixed + 1, n - fixed))
    fixed_high = min(fixed_high, (1.0 - epsilon) / 2.0)
    top = min(n, int(stats.binom.ppf(1.0 - _TAIL_SLACK, n, fixed_high)) + 1)
    counts = np.arange(top + 1, dtype=np.float64)[None, :]
    largest = _largest_broken(score, counts, n, epsilon)

    def tail(rates: np.ndarray) -> np.ndarray:
        rates = np.asarray(rates, dtype=np.float64)[:, None]
        broken_rate = np.clip((rates + epsilon) / np.maximum(1.0 - rates, 1e-300), 0.0, 1.0)
        mass = stats.binom.pmf(counts, n, rates) * stats.binom.cdf(largest, n - counts, broken_rate)
        return mass.sum(1)

    # The tail is smooth in the rate: a coarse grid, then a fine one around its best point (two vectorized passes
    # instead of a scalar optimizer's dozens of scipy calls).
    grid = np.linspace(0.0, fixed_high, _NUISANCE_GRID)
    values = tail(grid)
    best = int(values.argmax())
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], _NUISANCE_GRID)
    supremum = max(float(values[best]), float(tail(fine).max()))
    return min(1.0, supremum + _TAIL_SLACK + gamma)


def net_drop_p_value(
    broken: int | Sequence[int], fixed: int | Sequence[int], num_samples: int, epsilon: float, level: float
) -> float | list[float]:
    """Exact p-value of "the accuracy drop against full compute exceeds ``epsilon``", for a test at ``level``.

    The drop is the mean of a paired {-1, 0, +1} loss: +1 on a *broken* row (full compute right, the setting
    wrong), -1 on a *fixed* row (full compute wrong, the setting right), so rows a cheap setting fixes pay for rows
    it breaks. The counts are trinomial; the test is the exact unconditional test of a paired non-inferiority
    margin (as in Sidik, 2003) on the score ``(b - c - n * epsilon) / sqrt(b + c + 1)``: its tail is taken at the
    null boundary (broken rate = fixed rate + epsilon, the worst case, since more broken rows only raise the
    score) and maximised over the fixed rate within a ``1 - NUISANCE_SHARE * level`` Clopper-Pearson bound, whose
    miss probability is added to the p-value (Berger and Boos, 1994). Binomial masses come from ``scipy.stats``;
    the supremum is taken on a grid refined around its best point (``scipy.stats.barnard_exact`` also maximises
    its nuisance numerically). Rejecting when
    the p-value is at most ``level`` has level ``level``.

    Args:
        broken: Rows right at full compute and wrong under the setting (or a sequence of such counts).
        fixed: Rows wrong at full compute and right under the setting (same shape as ``broken``).
        num_samples: Rows in the sample (> 0).
        epsilon: The budget for the drop, in [0, 1).
        level: The level the p-value is compared with, in (0, 1): the nuisance bound spends a share of it.
    """
    if np.ndim(broken):
        return [_net_drop_p_value(int(b), int(c), num_samples, float(epsilon), float(level))
                for b, c in zip(broken, fixed, strict=True)]  # fmt: skip
    return _net_drop_p_value(int(broken), int(fixed), num_samples, float(epsilon), float(level))


@functools.lru_cache(maxsize=1 << 16)
def _net_drop_upper_bound(broken: int, fixed: int, num_samples: int, delta: float) -> float:
    # The p-value is exact at every budget but not monotone in it (the counts are discrete: it saw-tooths with a
    # period near 1 / n), so bisection could stop inside a budget range the test does not certify. The bound is
    # instead the top of the budgets it does not certify: scanned down from a certified budget in steps of
    # 1 / (4n) (coarser when that takes over 64 steps), the first budget not certified plus one step.
    n = num_samples
    low, step = max(0.0, (broken - fixed) / n), 1.0 / (4.0 * n)
    start = None
    for guess in (float(binomial_upper_bound(broken, n, delta)) + 1e-3, broken / n + 0.5):
        if _net_drop_p_value(broken, fixed, n, min(guess, 1.0 - 1e-9), delta) <= delta:
            start = min(guess, 1.0 - 1e-9)
            break
    if start is None:
        return 1.0
    budget, step = start, max(step, (start - low) / 64)  # at most 64 tests per bound
    while budget - step >= low:
        if _net_drop_p_value(broken, fixed, n, budget - step, delta) > delta:
            return budget
        budget -= step
    return low


def net_drop_upper_bound(
    broken: int | Sequence[int], fixed: int | Sequence[int], num_samples: int, delta: float
) -> float | list[float]:
    """Upper confidence bound on the accuracy drop: where :func:`net_drop_p_value` certifies every budget above it.

    Scanned on a grid of ``1 / (4 n)`` or 64 steps (the p-value saw-tooths with the discrete counts), floored at the
    observed drop and at 0. The certification of a budget is the test at that budget, which stays exact.

    Args:
        broken: Rows right at full compute and wrong under the setting (or a sequence of such counts).
        fixed: Rows wrong at full compute and right under the setting.
        num_samples: Rows in the sample (> 0).
        delta: Allowed error probability, in (0, 1).
    """
    if np.ndim(broken):
        return [_net_drop_upper_bound(int(b), int(c), num_samples, float(delta))
                for b, c in zip(broken, fixed, strict=True)]  # fmt: skip
    return _net_drop_upper_bound(int(broken), int(fixed), num_samples, float(delta))


def net_drop_rows_needed(epsilon: float, delta: float, limit: int = 10_000_000) -> int | None:
    """Fewest rows with which the net-drop test certifies ``epsilon`` at level ``delta`` (no broken, no fixed row).

    Args:
        epsilon: The budget for the drop, in [0, 1).
        delta: The level of the test, in (0, 1).
        limit: Largest row count searched.

    Returns:
        The row count, or ``None`` for ``epsilon == 0`` or beyond ``limit``.
    """
    if epsilon <= 0.0 or NUISANCE_SHARE * delta >= delta:
        return None
    low = max(1, (rows_needed(epsilon, delta) or 1) - 1)  # never fewer than the one-sided count test needs
    high = low
    while _net_drop_p_value(0, 0, high, float(epsilon), float(delta)) > delta:
        low, high = high, high * 2
        if high > limit:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        if _net_drop_p_value(0, 0, middle, float(epsilon), float(delta)) <= delta:
            high = middle
        else:
            low = middle
    return high
