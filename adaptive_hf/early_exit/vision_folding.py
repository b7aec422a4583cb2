"""Batch-norm folding for CPU inference of the early-exit timm classifiers, and the faster convolution kernels
that a folded copy runs (1x1, depthwise and TF-"same" depthwise convolutions on the few rows and small feature maps
of the late stages in adaptive inference).

Used by :meth:`~adaptive_hf.early_exit.vision_modeling.EarlyExitTimmForImageClassification.fold_batch_norms`; the
model keeps the checks that concern it (eval mode, outputs unchanged, memory layout, no training after a fold).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn


def folded_copy(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` with every batch norm that directly follows a convolution folded into it.

    Eval-mode batch norm is an affine map per channel, so it becomes the convolution's weights and bias (torch's
    ``fuse_conv_bn_eval``); a timm ``BatchNormAct2d`` keeps its activation. The copy's 1x1 and depthwise
    convolutions then run through the faster kernels below (same parameters; only the kernel that computes them
    differs). ``model`` itself is left unchanged.

    Args:
        model: An eval-mode timm model.

    Returns:
        ``(folded, count)``: the folded copy and the number of batch norms folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model)
    count = 0
    for parent in list(folded.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if not (isinstance(conv, nn.Conv2d) and type(norm) in _FOLDABLE_NORMS):
                continue
            if norm.running_mean is None or conv.out_channels != norm.num_features:
                continue
            parent._modules[first] = fuse_conv_bn_eval(conv, norm)
            parent._modules[second] = _FOLDABLE_NORMS[type(norm)](norm)
            count += 1
    for module in folded.modules():
        if _is_pointwise_conv(module):
            module.__class__ = _PointwiseConv2d
        elif _is_centered_depthwise_conv(module):
            module.__class__ = _DepthwiseConv2d
        elif _is_same_padded_depthwise_conv(module):
            module.__class__ = _SamePaddedDepthwiseConv2d
    return folded, count


def _activation_of(norm: nn.Module) -> nn.Module:
    # What a timm BatchNormAct2d does after normalizing: dropout, then its activation (identities left out: each
    # module call costs microseconds, which add up on the few rows of the late stages).
    parts = [m for m in (norm.drop, norm.act) if not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if len(parts) > 1 else parts[0] if parts else nn.Identity()


_FOLDABLE_NORMS = {nn.BatchNorm2d: lambda norm: nn.Identity(), BatchNormAct2d: _activation_of}


class _PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution (stride 1, no padding, one group) that runs as one matrix product where that is faster.

    On CPU with one thread torch runs a 1x1 convolution on fewer than 16 images as one small matrix product per
    image, re-reading the weights each time, and oneDNN is slow on 1x1 feature maps: exactly the few rows that
    reach a CNN's late stages in adaptive inference. On a channels_last input the convolution is one matrix
    product over the ``(rows * positions, channels)`` view (no copy); the output is channels_last again. Same
    values up to float rounding; other inputs take the stock convolution.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4:
            rows, positions = input.size(0), input.size(2) * input.size(3)
            # One image: torch's own path is already a single matrix product.
            if rows > 1 and (positions == 1 or (rows < 16 and positions <= 16)):
                tokens = input.permute(0, 2, 3, 1)
                if tokens.is_contiguous():
                    return F.linear(tokens, self.weight[:, :, 0, 0], self.bias).permute(0, 3, 1, 2)
        return super().forward(input)


class _DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution with centered zero padding (stride 1) that, on 1x1 feature maps, is what it computes
    there: each channel times its kernel's center tap, plus the bias (every other tap meets padding). Late CNN
    stages at small input sizes run on 1x1 maps; oneDNN spends tens of microseconds per call on them."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() == 4 and input.size(2) == 1 and input.size(3) == 1:
            center = self.weight[:, 0, self.padding[0], self.padding[1]].view(1, -1, 1, 1)
            out = input * center
            return out if self.bias is None else out.add_(self.bias.view(1, -1, 1, 1))
        return super().forward(input)


class _SamePaddedDepthwiseConv2d(Conv2dSame):
    """timm's TF-"same" depthwise convolution without its padding copy.

    For a stride-2 convolution on an even input, TF pads one pixel more on the right than on the left, so timm's
    ``Conv2dSame`` first copies the feature map into a padded one (``F.pad``, slow on channels_last maps). The
    same windows are those of a convolution with symmetric padding of ``left + stride`` pixels minus its first
    output row and column; the extra outputs cost less than the copy for depthwise kernels (not for dense ones).
    The result is the same.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() != 4:
            return super().forward(input)
        padding, window = [], []
        for size, kernel, stride in zip(input.shape[2:], self.kernel_size, self.stride, strict=True):
            count = -(-size // stride)
            total = max((count - 1) * stride + kernel - size, 0)
            left, right = total // 2, total - total // 2
            symmetric = left if left == right else left + stride * -(-(right - left) // stride)
            padding.append(symmetric)
            window.append(((symmetric - left) // stride, count))
        out = F.conv2d(input, self.weight, self.bias, self.stride, tuple(padding), self.dilation, self.groups)
        if all(skip == 0 and out.size(2 + dim) == count for dim, (skip, count) in enumerate(window)):
            return out
        (top, rows), (left, columns) = window
        layout = torch.channels_last if out.is_contiguous(memory_format=torch.channels_last) else None
        out = out[:, :, top : top + rows, left : left + columns]
        return out.contiguous(memory_format=layout) if layout is not None else out.contiguous()


def _is_same_padded_depthwise_conv(module: nn.Module) -> bool:
    return (
        type(module) is Conv2dSame
        and module.groups == module.in_channels == module.out_channels
        and module.dilation == (1, 1)
        and module.padding == (0, 0)
        and module.padding_mode == "zeros"
    )


def _is_centered_depthwise_conv(module: nn.Module) -> bool:
    kernel = module.kernel_size if isinstance(module, nn.Conv2d) else (0, 0)
    return (
        type(module) is nn.Conv2d
        and module.groups == module.in_channels == module.out_channels
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and kernel[0] % 2 == 1
        and kernel[1] % 2 == 1
        and module.padding == ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        and module.padding_mode == "zeros"
    )


def _is_pointwise_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
        and module.padding_mode == "zeros"
    )
