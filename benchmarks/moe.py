"""Switch-MoE layer speed, side by side in one process (see ../shared/benchmarks.md).

For every cell (tokens T, experts E) and mode (``fwd``: forward in inference mode; ``fwd_bwd``: forward and
backward in training mode), times:

* ``ours``: ``SwitchMoEFeedForward``, top-1, dropless, GELU experts with biases;
* ``dense``: a dense FFN with the same active parameters (one expert's worth);
* ``floor``: the ideal split: the same tokens cut into E equal chunks, each run through its own expert, no
  routing. The best of a batched matmul over the chunks (T padded to a multiple of E when it is not one) and a
  per-expert loop;
* ``switch_hf``: transformers' ``SwitchTransformersSparseMLP`` (capacity = T, so nothing is dropped);
* the same for gated (SwiGLU) experts against Mixtral's: ``ours_gated``, ``dense_gated``, ``floor_gated`` and
  ``mixtral_<impl>`` for every ``experts_implementation`` of transformers' Mixtral experts (``eager`` and the
  registered ones) that runs on this machine.

Method: the modules of one cell are built, timed and freed before the next cell. Timings are interleaved
(A B C ... A B C ...) after warm-up. Before every timed call a buffer twice the size of a typical last-level
cache is rewritten (``--flush_mb``), so each implementation reads its weights from memory as it would inside a
model, where other layers run in between; otherwise whichever implementation runs right after another one with
the same weights finds them cached. Each figure is the median of ``--reps`` runs (``--reps_large`` from
``--large_tokens`` tokens on); ``spread`` is (max - min) / median over those runs.

A reference that cannot fit is skipped with the reason (Mixtral's ``batched_mm`` gathers one copy of the expert
weights per token, T x (3 x hidden x intermediate) floats, more than ``--max_gb`` at large T). A reference whose
warm-up call takes longer than ``--slow_s`` is timed once (Mixtral's ``eager`` backward at large E: indexing the
stacked weights gives every expert it runs a full-size gradient).

Usage (the full grid, about 5-10 minutes on 2 quiet cores)::

    python benchmarks/moe.py --threads 2 --json moe.json
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/moe.py --threads 2 --json moe_thp.json

Stacked ``(E, in, out)`` expert weights get full-size gradients in every backward (about 150 MB per projection at
E = 64 here). glibc serves allocations that large with fresh ``mmap`` pages, so each backward also pays a page
fault per 4 KB. torch's ``THP_MEM_ALLOC_ENABLE=1`` (read when torch starts; set it before launching Python) backs
such allocations with 2 MB transparent huge pages, which removes most of that cost for every implementation in the
run. The header records whether it was set.

Smoke run::

    python benchmarks/moe.py --threads 1 --tokens 32 --experts 8 --reps 2
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_hf import SwitchMoEConfig, SwitchMoEFeedForward
from adaptive_hf.core.io import write_json


class DenseFFN(nn.Module):
    def __init__(self, hidden: int, inter: int, gated: bool = False):
        super().__init__()
        self.gated = gated
        self.up = nn.Linear(hidden, 2 * inter if gated else inter, bias=not gated)
        self.down = nn.Linear(inter, hidden, bias=not gated)

    def forward(self, x):
        h = self.up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.down(h)


class IdealSplit(nn.Module):
    """The experts of ``experts`` on the tokens pre-split into E equal chunks: the cost of the experts alone.

    Args:
        experts: A ``SwitchExperts`` (its weights are shared, not copied).
        use_bmm: One batched matmul per projection over ``(E, ceil(T / E), hidden)`` chunks (zero-padded when E
            does not divide T); otherwise a loop over the experts on their slices of the tokens.
    """

    def __init__(self, experts: nn.Module, use_bmm: bool):
        super().__init__()
        self.experts = experts
        self.use_bmm = use_bmm

    def _act(self, h):
        if self.experts.gated:
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(h)

    def forward(self, x):
        e = self.experts
        flat = x.reshape(-1, x.size(-1))
        tokens, num_experts = flat.size(0), e.num_experts
        if self.use_bmm:
            per_expert = math.ceil(tokens / num_experts)
            padded = F.pad(flat, (0, 0, 0, per_expert * num_experts - tokens))
            chunks = padded.view(num_experts, per_expert, -1)
            if e.up_bias is not None:
                h = torch.baddbmm(e.up_bias.unsqueeze(1), chunks, e.up_proj)
            else:
                h = torch.bmm(chunks, e.up_proj)
            h = self._act(h)
            if e.down_bias is not None:
                out = torch.baddbmm(e.down_bias.unsqueeze(1), h, e.down_proj)
            else:
                out = torch.bmm(h, e.down_proj)
            return out.reshape(-1, out.size(-1))[:tokens].view_as(x)
        # unbind once: indexing the stacked weights per expert would give every expert a full-size gradient
        ups, downs = e.up_proj.unbind(0), e.down_proj.unbind(0)
        up_biases = e.up_bias.unbind(0) if e.up_bias is not None else [None] * num_experts
        down_biases = e.down_bias.unbind(0) if e.down_bias is not None else [None] * num_experts
        outs = []
        for expert, chunk in enumerate(torch.tensor_split(flat, num_experts)):
            if chunk.size(0):
                h = self._act(F.linear(chunk, ups[expert].t(), up_biases[expert]))
                outs.append(F.linear(h, downs[expert].t(), down_biases[expert]))
        return torch.cat(outs).view_as(x)


def experts_implementations() -> list[str]:
    """``eager`` plus every implementation registered in transformers' experts interface."""
    names = ["eager"]
    try:
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

        names += [name for name in ALL_EXPERTS_FUNCTIONS.keys() if name not in names]
    except ImportError:
        names += ["batched_mm", "grouped_mm"]
    return names


def batched_mm_bytes(tokens: int, hidden: int, inter: int, backward: bool) -> int:
    """Memory Mixtral's ``batched_mm`` needs: a gathered copy of the gated expert weights per token (fp32)."""
    per_token = hidden * 2 * inter + inter * hidden
    return tokens * per_token * 4 * (3 if backward else 1)


def build(
    tokens: int, num_experts: int, hidden: int, inter: int, max_gb: float
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The modules of one cell, and ``{name: reason}`` for the references that are skipped."""
    torch.manual_seed(0)
    moe_config = SwitchMoEConfig(num_experts=num_experts, capacity_factor=0.0, capacity_group="batch")
    impls: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    ours = SwitchMoEFeedForward(moe_config, hidden, inter, "gelu")
    impls["ours"] = ours
    impls["dense"] = DenseFFN(hidden, inter)
    impls["floor_loop"] = IdealSplit(ours.experts, use_bmm=False)
    impls["floor_bmm"] = IdealSplit(ours.experts, use_bmm=True)
    try:
        from transformers import SwitchTransformersConfig
        from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

        st_config = SwitchTransformersConfig(
            d_model=hidden,
            d_ff=inter,
            num_experts=num_experts,
            expert_capacity=tokens,
            dense_act_fn="gelu",
            router_jitter_noise=0.0,
        )
        impls["switch_hf"] = SwitchTransformersSparseMLP(st_config)
    except ImportError as error:
        skipped["switch_hf"] = f"unavailable ({error})"
    ours_gated = SwitchMoEFeedForward(moe_config, hidden, inter, "silu", gated=True, bias=False)
    impls["ours_gated"] = ours_gated
    impls["dense_gated"] = DenseFFN(hidden, inter, gated=True)
    impls["floor_gated_loop"] = IdealSplit(ours_gated.experts, use_bmm=False)
    impls["floor_gated_bmm"] = IdealSplit(ours_gated.experts, use_bmm=True)
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    for implementation in experts_implementations():
        name = f"mixtral_{implementation}"
        if implementation == "batched_mm":
            need = batched_mm_bytes(tokens, hidden, inter, backward=False) / 2**30
            if need > max_gb:
                skipped[name] = f"needs ~{need:.1f} GB for the per-token weight copies (> --max_gb {max_gb:g})"
                continue
        config = MixtralConfig(
            hidden_size=hidden, intermediate_size=inter, num_local_experts=num_experts, num_experts_per_tok=1
        )
        config._experts_implementation = implementation
        try:
            block = MixtralSparseMoeBlock(config)
            for parameter in block.parameters():
                nn.init.normal_(parameter, std=0.02)
            with torch.no_grad():
                block(torch.randn(1, 8, hidden))
            impls[name] = block
        except Exception as error:  # noqa: BLE001 - an implementation unavailable on this machine
            skipped[name] = f"unavailable here ({type(error).__name__}: {str(error)[:80]})"
    return impls, skipped


CLOCK = time.perf_counter


def run_once(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, backward: bool) -> float:
    start = CLOCK()
    if backward:
        xs = x.detach().requires_grad_(True)
        out = module(xs)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad)
    else:
        with torch.inference_mode():
            module(x)
    return CLOCK() - start


def bench_cell(
    tokens: int,
    num_experts: int,
    hidden: int,
    inter: int,
    reps: int,
    max_gb: float,
    flush: Callable[[], None],
    slow_s: float,
) -> tuple[dict[str, dict], dict[str, str]]:
    impls, skipped = build(tokens, num_experts, hidden, inter, max_gb)
    x = torch.randn(1, tokens, hidden)
    grad = torch.randn(1, tokens, hidden)
    results: dict[str, dict] = {}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        active = dict(impls)
        mode_skipped = dict(skipped)
        if backward and "mixtral_batched_mm" in active:
            need = batched_mm_bytes(tokens, hidden, inter, backward=True) / 2**30
            if need > max_gb:
                del active["mixtral_batched_mm"]
                mode_skipped["mixtral_batched_mm"] = (
                    f"needs ~{need:.1f} GB for the per-token weight copies and their gradients (> --max_gb {max_gb:g})"
                )
        for module in active.values():
            module.train(backward)
            module.zero_grad(set_to_none=True)
        times: dict[str, list[float]] = {name: [] for name in active}
        slow: dict[str, float] = {}
        for round_index in range(1 + reps):  # one warm-up round
            for name in list(active):
                if name in slow and len(times[name]) >= 1:
                    continue  # far too slow to repeat: timed once after the warm-up
                module = active[name]
                module.zero_grad(set_to_none=True)
                flush()
                try:
                    elapsed = run_once(module, x, grad, backward)
                except RuntimeError as error:  # e.g. out of memory
                    mode_skipped[name] = f"failed ({str(error)[:80]})"
                    del active[name], times[name]
                    continue
                if round_index > 0:
                    times[name].append(elapsed)
                elif elapsed > slow_s and not name.startswith(("ours", "floor", "dense")):
                    slow[name] = elapsed
        for module in impls.values():
            module.zero_grad(set_to_none=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        spreads = {name: (max(v) - min(v)) / statistics.median(v) for name, v in times.items()}
        for name, elapsed in slow.items():
            mode_skipped[f"{name} (repetitions)"] = (
                f"warm-up took {elapsed:.1f} s (> --slow_s {slow_s:g}): timed once, no spread"
            )
        medians["floor"] = min(medians["floor_loop"], medians["floor_bmm"])
        medians["floor_gated"] = min(medians["floor_gated_loop"], medians["floor_gated_bmm"])
        results[mode] = {"median_s": medians, "spread": spreads, "reps": reps, "skipped": mode_skipped}
    del impls
    gc.collect()
    return results, skipped


def summary_row(tokens: int, num_experts: int, mode: str, data: dict) -> str:
    m = data["median_s"]
    nan = float("nan")
    mixtral = {k: v for k, v in m.items() if k.startswith("mixtral_")}
    best_mixtral = min(mixtral.values()) if mixtral else nan
    spread = max(data["spread"].values())
    return (
        f"| {tokens} | {num_experts} | {mode} | {m['ours'] * 1e3:.2f} | {m['ours'] / m['floor']:.2f} | "
        f"{m['ours'] / m['dense']:.2f} | {m.get('switch_hf', nan) / m['ours']:.2f} | "
        f"{m['ours_gated'] * 1e3:.2f} | {m['ours_gated'] / m['floor_gated']:.2f} | "
        f"{m['ours_gated'] / m['dense_gated']:.2f} | {best_mixtral / m['ours_gated']:.2f} | "
        f"{spread:.2f} | {data['reps']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 1024, 4096])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--reps_large", type=int, default=3, help="Repetitions for cells with >= --large_tokens.")
    parser.add_argument("--large_tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max_gb", type=float, default=8.0, help="Skip a reference needing more memory than this.")
    parser.add_argument(
        "--slow_s", type=float, default=2.0, help="A reference whose warm-up call is slower is timed only once."
    )
    parser.add_argument("--flush_mb", type=int, default=64, help="Cache-flush buffer rewritten before each call.")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="'cpu' = this thread's CPU time (with --threads 1 only): a rough A/B on a machine others are using.",
    )
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu measures one thread; use it with --threads 1.")
        global CLOCK
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    flush_buffer = torch.empty(args.flush_mb * 2**18) if args.flush_mb > 0 else None

    def flush() -> None:
        if flush_buffer is not None:
            flush_buffer.fill_(1.0)

    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={args.threads}, "
        f"hidden={args.hidden}, intermediate={args.intermediate}, fp32, top-1 dropless, cache flush "
        f"{args.flush_mb} MB, {args.clock} clock, median of {args.reps} ({args.reps_large} from "
        f"T={args.large_tokens}), THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}"
    )
    print(
        "# /floor, /dense: ours divided by them (lower is better); "
        "switch_hf/ours, best mixtral/ours_gated: above 1 = ours faster"
    )
    header = (
        "| T | E | mode | ours ms | /floor | /dense | switch_hf/ours | ours_gated ms | /floor_gated | /dense_gated "
        "| best mixtral/ours_gated | max spread | reps |"
    )
    print(header)
    print("|---" * 13 + "|", flush=True)
    report = []
    details = []
    start = time.perf_counter()
    for num_experts in args.experts:
        for tokens in args.tokens:
            reps = args.reps_large if tokens >= args.large_tokens else args.reps
            cell, _ = bench_cell(
                tokens, num_experts, args.hidden, args.intermediate, reps, args.max_gb, flush, args.slow_s
            )
            for mode, data in cell.items():
                print(summary_row(tokens, num_experts, mode, data), flush=True)
                report.append({"tokens": tokens, "experts": num_experts, "mode": mode, **data})
                times = ", ".join(
                    f"{name} {value * 1e3:.2f} ({data['spread'].get(name, 0):.2f})"
                    for name, value in data["median_s"].items()
                    if name not in ("floor", "floor_gated")
                )
                details.append(f"# T={tokens} E={num_experts} {mode}: ms (spread): {times}")
                details += [f"#   skipped {name}: {reason}" for name, reason in data["skipped"].items()]
            if args.json:  # after every cell, so an interrupted run keeps what it measured
                payload = {
                    "args": vars(args),
                    "torch": torch.__version__,
                    "thp": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                    "results": report,
                }
                write_json(args.json, payload, indent=1)
    print("\n".join(details))
    print(f"# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
