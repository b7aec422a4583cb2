"""Side-by-side wall-clock timing, as ``shared/benchmarks.md`` asks: same inputs, same process, interleaved
A B A B after warm-up, medians of several repetitions, a fixed thread count.

CUDA kernels run asynchronously, so a clock read right after a call would time the launch, not the work: the clock
is read only after the device has finished (``torch.cuda.synchronize``) whenever CUDA is in use.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class InterleavedTiming:
    """Seconds per repetition of the adaptive (A), full-compute (B) and, when timed, plain-backbone (C) runs.

    ``plain_times`` is empty unless a plain run was given: the stock model the user started from, so a full-compute
    path slower than it shows up instead of flattering the realized speedup.
    """

    adaptive_times: list[float]
    full_times: list[float]
    adaptive_output: Any
    threads: int
    plain_times: list[float] = field(default_factory=list)

    @property
    def realized_speedup(self) -> float:
        return statistics.median(self.full_times) / statistics.median(self.adaptive_times)

    @property
    def realized_speedup_vs_plain(self) -> float | None:
        """Plain-backbone time over adaptive time (``None`` when the plain model was not timed)."""
        if not self.plain_times:
            return None
        return statistics.median(self.plain_times) / statistics.median(self.adaptive_times)

    def summary(self, theoretical_speedup: float) -> dict[str, Any]:
        """Medians, realized and theoretical speedup, their ratio, and the spread of the repetitions.

        With a plain run, also ``plain_seconds``, ``realized_speedup_vs_plain``, ``efficiency_vs_plain`` and
        ``full_over_plain`` (full-compute time over plain time; 1.0 when the full-compute path costs what the plain
        model costs).
        """

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
        spreads = [result["adaptive_spread"], result["full_spread"]]
        if self.plain_times:
            plain = statistics.median(self.plain_times)
            result["plain_seconds"] = plain
            result["realized_speedup_vs_plain"] = self.realized_speedup_vs_plain
            result["efficiency_vs_plain"] = self.realized_speedup_vs_plain / theoretical_speedup
            result["full_over_plain"] = result["full_seconds"] / plain
            result["plain_spread"] = spread(self.plain_times)
            spreads.append(result["plain_spread"])
        result["noisy"] = bool(max(spreads) > 0.2)
        return result


def uses_cuda(device: torch.device | str | None = None) -> bool:
    """Whether timings must wait for CUDA: ``device`` is a CUDA device, or (``None``) CUDA has been initialized.

    Args:
        device: The device the timed work runs on; ``None`` = any CUDA work this process started.
    """
    if device is not None:
        return torch.device(device).type == "cuda"
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def synchronized_clock(device: torch.device | str | None = None) -> Callable[[], float]:
    """A ``time.perf_counter`` that first waits for the device's queued work when CUDA is in use.

    Args:
        device: The device the timed work runs on. ``None`` checks at every read whether this process has
            initialized CUDA (a model moved to the GPU after the clock was made is still waited for).
    """
    if device is not None:
        if not uses_cuda(device):
            return time.perf_counter
        cuda_device = torch.device(device)

        def device_clock() -> float:
            torch.cuda.synchronize(cuda_device)
            return time.perf_counter()

        return device_clock

    def clock() -> float:
        if uses_cuda():
            torch.cuda.synchronize()
        return time.perf_counter()

    return clock


def time_rounds(
    runs: Sequence[Callable[[], Any]],
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[list[float]], list[Any], int]:
    """Times any number of callables in interleaved rounds (A B C A B C ...) under ``torch.inference_mode``.

    Args:
        runs: Callables that each run one variant over the same inputs once.
        repeats: Timed rounds (at least 1; benchmarks.md asks for >= 5).
        warmup: Untimed rounds first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` keeps it.
        device: The device the models run on, to synchronize CUDA before each clock read; ``None`` synchronizes
            whenever this process has initialized CUDA.

    Returns:
        ``(times, outputs, threads)``: seconds of each timed round per run, each run's last return value, and the
        thread count in use.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1; got {repeats!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an integer >= 0; got {warmup!r}.")
    old_threads = torch.get_num_threads()
    times: list[list[float]] = [[] for _ in runs]
    outputs: list[Any] = [None for _ in runs]
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        clock = synchronized_clock(device)
        with torch.inference_mode():
            for round_index in range(warmup + repeats):
                for position, run in enumerate(runs):
                    start = clock()
                    outputs[position] = run()
                    elapsed = clock() - start
                    if round_index >= warmup:
                        times[position].append(elapsed)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return times, outputs, used_threads


def time_interleaved(
    run_adaptive: Callable[[], Any],
    run_full: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    run_plain: Callable[[], Any] | None = None,
    device: torch.device | str | None = None,
) -> InterleavedTiming:
    """Times two (or three) callables A B [C] A B [C] under ``torch.inference_mode`` with a fixed thread count.

    Args:
        run_adaptive: Runs the adaptive model over the inputs once; its last return value is kept.
        run_full: Runs the full-compute model over the same inputs once.
        repeats: Timed repetitions of each (at least 1; benchmarks.md asks for >= 5).
        warmup: Untimed rounds of each first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` keeps it.
        run_plain: Optionally runs the plain backbone model (the stock model the user started from) over the same
            inputs once, timed in the same rounds.
        device: The device the models run on, to synchronize CUDA before each clock read; ``None`` synchronizes
            whenever this process has initialized CUDA.
    """
    runs = [run_adaptive, run_full] + ([run_plain] if run_plain is not None else [])
    times, outputs, used_threads = time_rounds(runs, repeats, warmup, threads, device)
    plain_times = times[2] if run_plain is not None else []
    return InterleavedTiming(times[0], times[1], outputs[0], used_threads, plain_times)
