"""Side-by-side wall-clock timing, as ``shared/benchmarks.md`` asks: same inputs, same process, interleaved
A B A B after warm-up, medians of several repetitions, a fixed thread count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class InterleavedTiming:
    """Seconds per repetition of the adaptive (A) and full-compute (B) runs, and A's last output."""

    adaptive_times: list[float]
    full_times: list[float]
    adaptive_output: Any
    threads: int

    @property
    def realized_speedup(self) -> float:
        return statistics.median(self.full_times) / statistics.median(self.adaptive_times)

    def summary(self, theoretical_speedup: float) -> dict[str, Any]:
        """Medians, realized and theoretical speedup, their ratio, and the spread of the repetitions."""

        def spread(times: list[float]) -> float:
            return (max(times) - min(times)) / statistics.median(times)

        result = {
            "threads": self.threads,
            "repeats": len(self.adaptive_times),
            "adaptive_seconds": statistics.median(self.adaptive_times),
            "full_seconds": statistics.median(self.full_times),
            "realized_speedup": self.realized_speedup,
            "theoretical_speedup": theoretical_speedup,
            "efficiency": self.realized_speedup / theoretical_speedup,
            "adaptive_spread": spread(self.adaptive_times),
            "full_spread": spread(self.full_times),
        }
        result["noisy"] = bool(max(result["adaptive_spread"], result["full_spread"]) > 0.2)
        return result


def time_interleaved(
    run_adaptive: Callable[[], Any],
    run_full: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
) -> InterleavedTiming:
    """Times two callables A B A B under ``torch.inference_mode`` with a fixed thread count.

    Args:
        run_adaptive: Runs the adaptive model over the inputs once; its last return value is kept.
        run_full: Runs the full-compute model over the same inputs once.
        repeats: Timed repetitions of each (at least 1; benchmarks.md asks for >= 5).
        warmup: Untimed rounds of each first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` keeps it.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1; got {repeats!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer >= 0; got {warmup!r}.")
    old_threads = torch.get_num_threads()
    adaptive_times: list[float] = []
    full_times: list[float] = []
    output = None
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for round_index in range(warmup + repeats):
                start = time.perf_counter()
                output = run_adaptive()
                middle = time.perf_counter()
                run_full()
                end = time.perf_counter()
                if round_index >= warmup:
                    adaptive_times.append(middle - start)
                    full_times.append(end - middle)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return InterleavedTiming(adaptive_times, full_times, output, used_threads)
