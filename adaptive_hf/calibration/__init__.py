"""One risk-controlled ``calibrate`` for every technique (Learn-then-Test with exact tests from ``scipy.stats``).

* :mod:`.bounds`: Clopper-Pearson bounds (disagreement), the paired net-drop test and bound (accuracy drop), rows
  needed for a budget.
* :mod:`.collect`: the generic collector (one eval pass per candidate setting) and batch preparation.
* :mod:`.selection`: per-candidate risks and the selection rules.
* :mod:`.report`: the report, its config summary and the statement the model card shows.
* :mod:`.api`: :func:`calibrate`, :func:`collect_candidates` (measure once) and :func:`select_setting`.
"""

from .api import calibrate, collect_candidates, select_setting
from .bounds import (
    binomial_p_value,
    binomial_upper_bound,
    net_drop_p_value,
    net_drop_rows_needed,
    net_drop_upper_bound,
    rows_needed,
)
from .report import CalibrationReport

__all__ = [
    "CalibrationReport",
    "binomial_p_value",
    "binomial_upper_bound",
    "calibrate",
    "collect_candidates",
    "net_drop_p_value",
    "net_drop_rows_needed",
    "net_drop_upper_bound",
    "rows_needed",
    "select_setting",
]
