"""Expert weights stacked per expert, run as grouped matmuls over expert-sorted tokens.

Weights are stored ``(E, in, out)``, so upcycling copies a dense ``(in, out)`` FFN matrix into each slice and one
grouped matmul runs every expert on its own contiguous block of rows.

Grouped matmul, in order of preference:

* ``torch._grouped_mm`` in eager mode, where it exists and works for the device and dtype (probed once; on CPU
  torch >= 2.9 it does for float32 and bfloat16, on CUDA it needs bfloat16 on recent GPUs);
* under ``torch.compile``, a registered custom op around the same kernel (torch's fake implementation of
  ``_grouped_mm`` rejects float32, so the op carries its own shape function and backward);
* a sorted-slice loop over the experts where no grouped kernel works (no ``_grouped_mm``, an unsupported
  dtype, or widths whose rows are not 16-byte aligned, e.g. 37 float32 columns). This path reads the offsets on
  the host (one synchronisation per matmul); the others never do.

Rows beyond ``offsets[-1]`` (dropped or padding assignments) are never computed; their output rows hold
arbitrary values, which the MoE layer masks.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

_GROUPED_MM = getattr(torch, "_grouped_mm", None)
_SUPPORT: dict[tuple[str, torch.dtype], bool] = {}


def grouped_mm_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` runs and is exact for ``(device, dtype)``; probed once per pair.

    Args:
        device: Device of the operands.
        dtype: Dtype of the operands.
    """
    key = (device.type, dtype)
    if key not in _SUPPORT:
        ok = False
        if _GROUPED_MM is not None:
            try:
                x = torch.arange(48, device=device, dtype=torch.float32).view(6, 8).to(dtype) / 8
                w = torch.arange(128, device=device, dtype=torch.float32).view(2, 8, 8).to(dtype) / 64
                offs = torch.tensor([2, 5], device=device, dtype=torch.int32)
                out = _GROUPED_MM(x, w, offs=offs)
                ref = torch.cat([x[:2] @ w[0], x[2:5] @ w[1]])
                wgrad = _GROUPED_MM(x.t(), out, offs=offs)
                ok = (
                    bool(torch.allclose(out[:5].float(), ref.float(), rtol=2e-2, atol=2e-2)) and wgrad.shape == w.shape
                )
            except (RuntimeError, NotImplementedError, TypeError):
                ok = False
        _SUPPORT[key] = ok
    return _SUPPORT[key]


def _can_group(x: torch.Tensor, w: torch.Tensor) -> bool:
    """The grouped kernel needs 16-byte aligned row strides: widths that are multiples of 4 (fp32) or 8 (bf16)."""
    if not grouped_mm_supported(x.device, x.dtype):
        return False
    size = x.element_size()
    return (x.size(-1) * size) % 16 == 0 and (w.size(-1) * size) % 16 == 0


def _loop_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sorted-slice fallback: one matmul per expert on its rows (reads the offsets on the host)."""
    out = x.new_zeros(x.size(0), w.size(-1))
    start = 0
    for expert, end in enumerate(offsets.tolist()):
        if end > start:
            out[start:end] = x[start:end] @ w[expert]
        start = end
    return out


def _loop_weight_grad(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    out = x.new_zeros(offsets.numel(), x.size(1), grad.size(1))
    start = 0
    for expert, end in enumerate(offsets.tolist()):
        if end > start:
            out[expert] = x[start:end].t() @ grad[start:end]
        start = end
    return out


def _mm_impl(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if _can_group(x, w):
        return _GROUPED_MM(x, w, offs=offsets)
    return _loop_mm(x, w, offsets)


def _weight_grad_impl(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if _can_group(x, grad):
        return _GROUPED_MM(x.t(), grad, offs=offsets)
    return _loop_weight_grad(x, grad, offsets)


# A unique namespace per copy of this module: a saved model's bundled copy (trust_remote_code) can be imported in
# the same process as the package without clashing with the package's op.
_NAMESPACE = "ahf_" + re.sub(r"\W", "_", __name__)


@torch.library.custom_op(f"{_NAMESPACE}::grouped_mm", mutates_args=())
def _grouped_mm_op(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    out = _mm_impl(x, w, offsets)
    return out if out.data_ptr() not in (x.data_ptr(), w.data_ptr()) else out.clone()


@_grouped_mm_op.register_fake
def _grouped_mm_fake(x, w, offsets):
    return x.new_empty(x.size(0), w.size(-1))


@torch.library.custom_op(f"{_NAMESPACE}::grouped_mm_weight_grad", mutates_args=())
def _weight_grad_op(x: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return _weight_grad_impl(x, grad, offsets)


@_weight_grad_op.register_fake
def _weight_grad_fake(x, grad, offsets):
    return x.new_empty(offsets.size(0), x.size(1), grad.size(1))


def _grouped_mm_setup(ctx, inputs, output):
    x, w, offsets = inputs
    ctx.save_for_backward(x, w, offsets)


def _grouped_mm_backward(ctx, grad):
    x, w, offsets = ctx.saved_tensors
    grad = grad.contiguous()
    grad_x = _grouped_mm_op(grad, w.transpose(-2, -1), offsets) if ctx.needs_input_grad[0] else None
    grad_w = _weight_grad_op(x, grad, offsets) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w, None


_grouped_mm_op.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``out[rows of expert e] = x[rows of expert e] @ w[e]`` for expert-sorted rows.

    Args:
        x: ``(M, in)`` rows sorted by expert.
        w: ``(E, in, out)`` stacked expert weights.
        offsets: ``(E,)`` int32 cumulative row counts (expert ``e`` owns rows ``offsets[e-1]:offsets[e]``).

    Returns:
        ``(M, out)``; rows at or beyond ``offsets[-1]`` hold arbitrary values.
    """
    if torch.compiler.is_compiling():
        return _grouped_mm_op(x, w, offsets)
    if _can_group(x, w):
        return _GROUPED_MM(x, w, offs=offsets)
    return _grouped_mm_op(x, w, offsets)


class SwitchExperts(nn.Module):
    """``E`` feed-forward experts with stacked weights, run on expert-sorted rows.

    Args:
        num_experts: E.
        hidden_size: Input and output width.
        intermediate_size: Hidden width of each expert.
        activation: Name in ``transformers.activations.ACT2FN``.
        gated: ``down(act(gate(x)) * up(x))`` (Llama) instead of ``down(act(up(x)))``.
        bias: Whether the projections have biases.
    """

    def __init__(
        self,
        num_experts: int,
        hidden_size: int,
        intermediate_size: int,
        activation: str = "gelu",
        *,
        gated: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.num_experts = num_experts
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.gated = gated
        self.activation_name = activation
        self.act = ACT2FN[activation]
        up_width = 2 * intermediate_size if gated else intermediate_size
        # For gated experts the first half of up_proj is the gate projection, the second the up projection.
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden_size, up_width))
        self.down_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))
        self.up_bias = nn.Parameter(torch.zeros(num_experts, up_width)) if bias else None
        self.down_bias = nn.Parameter(torch.zeros(num_experts, hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal weights with standard deviation ``std``, zero biases."""
        nn.init.normal_(self.up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std)
        if self.up_bias is not None:
            nn.init.zeros_(self.up_bias)
            nn.init.zeros_(self.down_bias)

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, "
            f"intermediate_size={self.intermediate_size}, activation={self.activation_name!r}, gated={self.gated}"
        )

    def _row_bias(self, bias: torch.Tensor, expert_index: torch.Tensor, all_run: bool) -> torch.Tensor:
        if all_run:
            return bias.index_select(0, expert_index)
        # Rows that do not run (expert index E) take a zero bias row outside the parameter, so the arbitrary
        # gradient of those rows never reaches the biases.
        return F.pad(bias, (0, 0, 0, 1)).index_select(0, expert_index)

    def forward(
        self, x: torch.Tensor, offsets: torch.Tensor, expert_index: torch.Tensor, all_run: bool = False
    ) -> torch.Tensor:
        """Runs each expert on its rows.

        Args:
            x: ``(M, hidden)`` rows sorted by expert.
            offsets: ``(E,)`` int32 cumulative rows per expert.
            expert_index: ``(M,)`` expert of each row (``E`` for rows that do not run); used for the biases.
            all_run: Every row runs (no index is ``E``, ``offsets[-1] == M``): the biases need no sentinel row.

        Returns:
            ``(M, hidden)``; rows beyond ``offsets[-1]`` hold arbitrary values.
        """
        h = grouped_mm(x, self.up_proj, offsets)
        if self.up_bias is not None:
            # In place: the grouped matmul's backward needs its inputs, not its output.
            h = h.add_(self._row_bias(self.up_bias, expert_index, all_run))
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        out = grouped_mm(h, self.down_proj, offsets)
        if self.down_bias is not None:
            out = out.add_(self._row_bias(self.down_bias, expert_index, all_run))
        return out

    def forward_dense(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """Expert ``expert`` applied to every row of ``x`` (a reference for tests and benchmarks)."""
        h = x @ self.up_proj[expert]
        if self.up_bias is not None:
            h = h + self.up_bias[expert]
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        out = h @ self.down_proj[expert]
        if self.down_bias is not None:
            out = out + self.down_bias[expert]
        return out
