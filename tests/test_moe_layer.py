"""Switch-MoE layer invariants: routing against a brute-force reference, capacity, padding, losses, compile."""

from __future__ import annotations

import math

import pytest
import torch

from adaptive_hf import SwitchMoEConfig, SwitchMoEFeedForward
from adaptive_hf.moe import experts as experts_module

HIDDEN, INTER, EXPERTS = 16, 24, 4


def make_layer(seed: int = 0, **settings) -> SwitchMoEFeedForward:
    torch.manual_seed(seed)
    settings.setdefault("num_experts", EXPERTS)
    layer = SwitchMoEFeedForward(SwitchMoEConfig(**settings), HIDDEN, INTER, "gelu")
    with torch.no_grad():  # distinct experts with non-zero biases, so a wrong expert or bias shows
        layer.experts.up_bias.normal_()
        layer.experts.down_bias.normal_()
        layer.router.weight.normal_(std=0.5)
    return layer


def padded_inputs(batch: int = 3, seq: int = 10, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, HIDDEN, generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1 % batch, 6:] = 0
    mask[2 % batch, 3:] = 0
    return x, mask


def reference(layer: SwitchMoEFeedForward, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Token-by-token routing with per-group capacity counters, written as plainly as possible."""
    config = layer.config
    k, num_experts = config.num_experts_per_tok, config.num_experts
    batch, seq, hidden = x.shape
    flat = x.reshape(-1, hidden)
    real = torch.ones(batch * seq, dtype=torch.bool) if mask is None else mask.reshape(-1).bool()
    probs = layer.router(flat).softmax(-1)
    top_p, top_e = probs.topk(k, dim=-1)
    if config.gate_scaling == "normalized":
        top_p = top_p / top_p.sum(-1, keepdim=True)
    elif config.gate_scaling == "straight_through":
        top_p = torch.full_like(top_p, 1.0 / k)
    group_size = seq if config.capacity_group == "sequence" else batch * seq
    out = torch.zeros_like(flat)
    used: dict[tuple[int, int], int] = {}
    for choice in range(k):  # all first choices before any second choice
        for token in range(batch * seq):
            if not real[token]:
                continue
            group, expert = token // group_size, int(top_e[token, choice])
            group_real = int(real[group * group_size : (group + 1) * group_size].sum())
            if config.capacity_factor > 0:
                capacity = math.ceil(k * group_real * config.capacity_factor / num_experts - 1e-9)
            else:
                capacity = math.inf
            if used.get((group, expert), 0) >= capacity:
                continue
            used[(group, expert)] = used.get((group, expert), 0) + 1
            out[token] += top_p[token, choice] * layer.experts.forward_dense(flat[token : token + 1], expert)[0]
    return out.view_as(x)


ROUTING_CASES = [
    (capacity_factor, top_k, capacity_group, "probability")
    for capacity_factor in (0.0, 0.75, 1.25)
    for top_k in (1, 2)
    for capacity_group in ("sequence", "batch")
] + [(1.0, 2, "sequence", "straight_through"), (1.0, 2, "batch", "normalized"), (0.0, 1, "batch", "normalized")]


@pytest.mark.parametrize(("capacity_factor", "top_k", "capacity_group", "gate_scaling"), ROUTING_CASES)
def test_layer_matches_brute_force_routing(capacity_factor, top_k, capacity_group, gate_scaling):
    layer = make_layer(
        capacity_factor=capacity_factor, top_k=top_k, capacity_group=capacity_group, gate_scaling=gate_scaling
    ).eval()
    x, mask = padded_inputs()
    with torch.no_grad():
        out = layer(x, mask)
        expected = reference(layer, x, mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_capacity_drops_overflow_per_sequence_and_per_batch():
    x, _ = padded_inputs(batch=2, seq=8)
    for group, expected_kept in (("sequence", [2, 2]), ("batch", [4, 0])):
        # capacity = ceil(8 / 4 * 1.0) = 2 per sequence, or ceil(16 / 4 * 1.0) = 4 over the batch of 16 tokens
        layer = make_layer(capacity_factor=1.0, capacity_group=group).eval()
        with torch.no_grad():
            layer.router.weight.zero_()
            layer.router.weight[0] = 1.0  # every token prefers expert 0
            out = layer(x.abs())  # positive inputs: expert 0 wins for every token
        kept = (out.abs().sum(-1) > 0).sum(-1).tolist()
        assert kept == expected_kept, group
        # the kept tokens are the first in each group (Switch priority), the rest output exactly zero
        if group == "sequence":
            assert (out[:, :2].abs().sum(-1) > 0).all() and (out[:, 2:] == 0).all()
        assert layer.last_stats.expert_counts.tolist() == [4, 0, 0, 0]
        assert layer.last_stats.dropped_fraction.item() == pytest.approx(12 / 16)


def test_dropless_equals_infinite_capacity():
    x, mask = padded_inputs(batch=4, seq=12)
    dropless = make_layer(capacity_factor=0.0).eval()
    huge = make_layer(capacity_factor=1e6).eval()
    with torch.no_grad():
        a, b = dropless(x, mask), huge(x, mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert dropless.last_stats.dropped_fraction.item() == 0.0
    torch.testing.assert_close(dropless.last_stats.expert_counts, huge.last_stats.expert_counts)


def test_padding_takes_no_capacity_and_counts_in_no_loss():
    layer = make_layer(capacity_factor=1.0).train()
    x, mask = padded_inputs()
    out = layer(x, mask)
    stats = layer.last_stats
    noisy = torch.where(mask.bool().unsqueeze(-1), x, 100 * torch.randn_like(x))
    out_noisy = layer(noisy, mask)
    torch.testing.assert_close(out_noisy, out)
    torch.testing.assert_close(layer.last_stats.aux_loss, stats.aux_loss)
    torch.testing.assert_close(layer.last_stats.z_loss, stats.z_loss)
    assert (out[~mask.bool()] == 0).all()
    assert int(stats.expert_counts.sum()) <= int(mask.sum())
    # the losses equal those of the real tokens alone (per-token averages over real tokens only)
    real = x[mask.bool()]
    logits = layer.router(real)
    probs = logits.softmax(-1)
    fraction = torch.zeros(EXPERTS).scatter_add_(0, probs.argmax(-1), torch.ones(len(real))) / len(real)
    torch.testing.assert_close(stats.aux_loss, EXPERTS * (fraction * probs.mean(0)).sum())
    torch.testing.assert_close(stats.z_loss, torch.logsumexp(logits, -1).square().mean())


def test_z_loss_uses_raw_logits():
    layer = make_layer(capacity_factor=0.0).eval()
    x, mask = padded_inputs()
    layer(x, mask)
    logits = layer.last_stats.router_logits[mask.reshape(-1).bool()]
    torch.testing.assert_close(layer.last_stats.z_loss, torch.logsumexp(logits, -1).square().mean())
    before = layer.last_stats.z_loss
    # Scaling the logits keeps the routing (argmax) but not the raw-logit z-loss; on log-probabilities it would
    # be identically 0.
    with torch.no_grad():
        layer.router.weight.mul_(3.0)
    layer(x, mask)
    assert layer.last_stats.z_loss > 4 * before > 0


def test_jitter_only_reaches_the_router():
    # Identical experts and straight-through gates: the output is one expert applied to the input it received.
    layer = make_layer(router_jitter=0.5, capacity_factor=0.0)
    with torch.no_grad():
        layer.experts.up_proj.copy_(layer.experts.up_proj[:1].expand_as(layer.experts.up_proj))
        layer.experts.down_proj.copy_(layer.experts.down_proj[:1].expand_as(layer.experts.down_proj))
        layer.experts.up_bias.copy_(layer.experts.up_bias[:1].expand_as(layer.experts.up_bias))
        layer.experts.down_bias.copy_(layer.experts.down_bias[:1].expand_as(layer.experts.down_bias))
    x, _ = padded_inputs()
    layer.train()
    torch.manual_seed(3)
    out = layer(x)
    jittered_logits = layer.last_stats.router_logits
    layer.eval()
    clean_logits = layer.router(x.reshape(-1, HIDDEN))
    assert not torch.allclose(jittered_logits, clean_logits)  # the router saw noise
    dense = layer.experts.forward_dense(x.reshape(-1, HIDDEN), 0).view_as(x)
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)  # the experts did not


def test_gradients_are_finite_and_zero_for_dropped_and_padding_tokens(monkeypatch):
    real = experts_module._GROUPED_MM

    def poisoned(x, w, offs):  # rows that do not run hold arbitrary values: make them NaN, deterministically
        out = real(x, w, offs=offs).clone()
        out[torch.arange(len(out)) >= offs[-1]] = float("nan")
        return out

    if real is not None:
        monkeypatch.setattr(experts_module, "_GROUPED_MM", poisoned)
    layer = make_layer(capacity_factor=0.5, top_k=2).train()
    x, mask = padded_inputs()
    x.requires_grad_(True)
    out = layer(x, mask)
    (out.square().sum() + layer.last_stats.aux_loss + layer.last_stats.z_loss).backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~mask.bool()] == 0).all()
    for parameter in layer.parameters():
        assert torch.isfinite(parameter.grad).all()
    assert layer.router.weight.grad.abs().sum() > 0


def test_straight_through_gate_is_exactly_one_but_trains_the_router():
    layer = make_layer(gate_scaling="straight_through", capacity_factor=0.0).train()
    x, _ = padded_inputs()
    out = layer(x)
    expert = layer.last_stats.router_logits.argmax(-1)
    flat = x.reshape(-1, HIDDEN)
    expected = torch.stack([layer.experts.forward_dense(flat[t : t + 1], int(expert[t]))[0] for t in range(len(flat))])
    torch.testing.assert_close(out.reshape(-1, HIDDEN), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_grouped_matmul_fallback_matches(monkeypatch):
    layer = make_layer(capacity_factor=1.0, top_k=2).train()
    x, mask = padded_inputs()
    results = []
    for supported in (True, False):
        monkeypatch.setattr(experts_module, "_SUPPORT", {("cpu", torch.float32): supported})
        layer.zero_grad()
        xs = x.clone().requires_grad_(True)
        out = layer(xs, mask)
        out.square().sum().backward()
        results.append(
            (out.detach(), xs.grad, layer.experts.up_proj.grad.clone(), layer.experts.down_proj.grad.clone())
        )
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    layer = make_layer(capacity_factor=1.0, top_k=2, router_jitter=0.0).train()
    x, mask = padded_inputs()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    outputs = []
    for module in (layer, compiled):
        layer.zero_grad()
        xs = x.clone().requires_grad_(True)
        out = module(xs, mask)
        (out.square().sum() + layer.last_stats.aux_loss).backward()
        outputs.append((out.detach(), xs.grad, layer.router.weight.grad.clone(), layer.experts.up_proj.grad.clone()))
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("capacity_group", "token", "capacity_group.*'sequence', 'batch'"),
        ("capacity_factor", -1.0, "capacity_factor"),
        ("num_experts_per_tok", 9, "num_experts_per_tok"),
        ("gate_scaling", "softmax", "gate_scaling.*straight_through"),
        ("router_jitter", 1.5, "router_jitter"),
        ("moe_layers", [], "moe_layers"),
        ("add_aux_loss_without_labels", 1, "add_aux_loss_without_labels"),
    ],
)
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SwitchMoEConfig(num_experts=8, **{field: value})


def test_top_k_alias():
    assert SwitchMoEConfig(top_k=2).num_experts_per_tok == 2
