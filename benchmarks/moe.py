"""Switch-MoE layer speed, side by side in one process (see ../shared/benchmarks.md).

For every cell (tokens T, experts E) and mode (forward in inference, forward+backward in training), times:

* ``ours``: ``SwitchMoEFeedForward``, top-1, dropless (GELU experts with biases);
* ``dense``: a dense FFN with the same active parameters (one expert's worth);
* ``floor``: the ideal split: the same tokens cut into E equal chunks, each run through its own expert, no routing
  (the best of a per-expert loop and a batched matmul);
* ``switch_hf``: transformers' ``SwitchTransformersSparseMLP`` (capacity = T, so nothing is dropped);
* gated (SwiGLU) experts, compared with Mixtral's: ``ours_gated``, ``floor_gated`` and ``mixtral_<impl>`` for each
  CPU ``experts_implementation`` of transformers' ``MixtralSparseMoeBlock``.

Timings are interleaved (A B C ... A B C ...) after warm-up; each figure is the median of ``--reps`` runs.

Usage:
    python benchmarks/moe.py --threads 2 --json moe.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_hf import SwitchMoEConfig, SwitchMoEFeedForward


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
    """E experts, the tokens pre-split into E equal chunks: the cost of the experts alone."""

    def __init__(self, experts: nn.Module, use_bmm: bool):
        super().__init__()
        self.experts = experts
        self.use_bmm = use_bmm

    def forward(self, x):
        e = self.experts
        flat = x.reshape(-1, x.size(-1))
        tokens, num_experts = flat.size(0), e.num_experts
        if self.use_bmm and tokens % num_experts == 0:
            chunks = flat.view(num_experts, tokens // num_experts, -1)
            h = torch.bmm(chunks, e.up_proj)
            if e.up_bias is not None:
                h = h + e.up_bias.unsqueeze(1)
            if e.gated:
                gate, up = h.chunk(2, dim=-1)
                h = F.silu(gate) * up
            else:
                h = F.gelu(h)
            out = torch.bmm(h, e.down_proj)
            if e.down_bias is not None:
                out = out + e.down_bias.unsqueeze(1)
            return out.reshape_as(x)
        outs = []
        for expert, chunk in enumerate(torch.tensor_split(flat, num_experts)):
            if chunk.size(0):
                outs.append(e.forward_dense(chunk, expert))
        return torch.cat(outs).view_as(x)


def build(tokens: int, num_experts: int, hidden: int, inter: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    moe_config = SwitchMoEConfig(num_experts=num_experts, capacity_factor=0.0, capacity_group="batch")
    impls: dict[str, nn.Module] = {}
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
    except ImportError:
        pass
    ours_gated = SwitchMoEFeedForward(moe_config, hidden, inter, "silu", gated=True, bias=False)
    impls["ours_gated"] = ours_gated
    impls["dense_gated"] = DenseFFN(hidden, inter, gated=True)
    impls["floor_gated_loop"] = IdealSplit(ours_gated.experts, use_bmm=False)
    impls["floor_gated_bmm"] = IdealSplit(ours_gated.experts, use_bmm=True)
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    for implementation in ("eager", "batched_mm", "grouped_mm"):
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
            impls[f"mixtral_{implementation}"] = block
        except Exception as error:  # noqa: BLE001 - an implementation unavailable on this machine
            print(f"# mixtral {implementation}: unavailable ({type(error).__name__}: {error})")
    return impls


def run_once(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, backward: bool) -> float:
    start = time.perf_counter()
    if backward:
        xs = x.detach().requires_grad_(True)
        out = module(xs)
        out.backward(grad)
    else:
        with torch.inference_mode():
            module(x)
    return time.perf_counter() - start


def bench_cell(tokens: int, num_experts: int, hidden: int, inter: int, reps: int) -> dict[str, dict[str, float]]:
    impls = build(tokens, num_experts, hidden, inter)
    x = torch.randn(1, tokens, hidden)
    grad = torch.randn(1, tokens, hidden)
    results: dict[str, dict[str, float]] = {}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        times: dict[str, list[float]] = {name: [] for name in impls}
        for module in impls.values():
            module.train(backward)
            module.zero_grad(set_to_none=True)
        for _ in range(2):  # warm-up
            for module in impls.values():
                run_once(module, x, grad, backward)
        for _ in range(reps):
            for name, module in impls.items():
                module.zero_grad(set_to_none=True)
                times[name].append(run_once(module, x, grad, backward))
        medians = {name: statistics.median(values) for name, values in times.items()}
        spreads = {name: (max(v) - min(v)) / statistics.median(v) for name, v in times.items()}
        medians["floor"] = min(medians["floor_loop"], medians["floor_bmm"])
        medians["floor_gated"] = min(medians["floor_gated_loop"], medians["floor_gated_bmm"])
        results[mode] = {"median_s": medians, "spread": spreads}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32, 1024, 4096])
    parser.add_argument("--experts", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={args.threads}, "
        f"hidden={args.hidden}, intermediate={args.intermediate}, fp32, median of {args.reps}"
    )
    header = (
        "| T | E | mode | ours ms | /floor | /dense | switch_hf/ours | ours_gated ms | /floor_gated | /dense_gated "
        "| best mixtral/ours_gated | max spread |"
    )
    print(header)
    print("|---" * 12 + "|")
    report = []
    for num_experts in args.experts:
        for tokens in args.tokens:
            cell = bench_cell(tokens, num_experts, args.hidden, args.intermediate, args.reps)
            for mode, data in cell.items():
                m = data["median_s"]
                mixtral = {k: v for k, v in m.items() if k.startswith("mixtral_")}
                best_mixtral = min(mixtral.values()) if mixtral else float("nan")
                spread = max(data["spread"].values())
                print(
                    f"| {tokens} | {num_experts} | {mode} | {m['ours'] * 1e3:.2f} | {m['ours'] / m['floor']:.2f} | "
                    f"{m['ours'] / m['dense']:.2f} | {m.get('switch_hf', float('nan')) / m['ours']:.1f} | "
                    f"{m['ours_gated'] * 1e3:.2f} | {m['ours_gated'] / m['floor_gated']:.2f} | "
                    f"{m['ours_gated'] / m['dense_gated']:.2f} | {best_mixtral / m['ours_gated']:.1f} | "
                    f"{spread:.2f} |",
                    flush=True,
                )
                report.append({"tokens": tokens, "experts": num_experts, "mode": mode, **data})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "torch": torch.__version__, "results": report}, handle, indent=1)


if __name__ == "__main__":
    main()
