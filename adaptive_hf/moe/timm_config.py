"""Switch-MoE config for timm vision transformers: the timm ``architecture`` and ``model_args`` plus the MoE fields.

:class:`SwitchMoETimmConfig` is a ``core.vision_backbones.TimmClassifierConfig`` (the timm model by name and
constructor arguments, like the vision early-exit, halting and video configs), so ``from_pretrained`` rebuilds the
timm model exactly, plus the MoE layout (``num_experts``, ``moe_layers``, ...). ``moe_layers`` are 1-based block
indices. Where a timm ViT keeps its blocks and their ``Mlp`` is known to the one timm ViT adapter
(``core.adapters.timm.TimmViTAdapter``), as for every other technique.
"""

from __future__ import annotations

from ..core.adapters.timm import TimmViTAdapter
from ..core.vision_backbones import TimmClassifierConfig
from .config import make_moe_config_class

SwitchMoETimmConfig = make_moe_config_class(TimmViTAdapter, module=__name__, config_class=TimmClassifierConfig)
SwitchMoETimmConfig.__doc__ = (
    "Config of ``SwitchMoETimmForImageClassification``: the timm ``architecture`` and ``model_args`` (see "
    ":class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig`) plus the switch-MoE fields (see "
    ":class:`~adaptive_hf.moe.config.SwitchMoEConfig`); ``moe_layers`` are 1-based block indices."
)
