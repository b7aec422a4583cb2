"""Per-layer modules keyed by the layer they belong to, and the load-time check that config and weights agree.

Exit heads, halting units and MoE routers belong to one backbone layer each. Their weights are saved under that
layer's number (``exit_heads.layer_4.classifier.weight``), not under their position in a list: a checkpoint whose
config lost or changed its layer list then fails to load with an error that names both the config's layers and the
weights' layers, instead of loading the layer-4 head at layer 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

LAYER_KEY_PREFIX = "layer_"


class LayerKeyedModules(nn.Module):
    """An ordered container of one module per backbone layer, stored under ``layer_<n>``.

    It reads like the ``nn.ModuleList`` it replaces (``heads[k]``, ``heads[-1]``, ``len``, iteration in layer
    order) while its state-dict keys carry the 1-based layer number.

    Args:
        layers: 1-based layer numbers, ascending.
        modules: One module per layer.
        config_field: The config field that lists these layers (used in error messages).
    """

    def __init__(self, layers: Sequence[int], modules: Iterable[nn.Module], config_field: str):
        super().__init__()
        modules = list(modules)
        if len(modules) != len(layers):
            raise ValueError(f"{len(layers)} layers ({list(layers)}) but {len(modules)} modules.")
        self.config_field = config_field
        for layer, module in zip(layers, modules):
            self.add_module(f"{LAYER_KEY_PREFIX}{int(layer)}", module)

    @property
    def layers(self) -> list[int]:
        """The 1-based layer numbers, in order."""
        return [int(name[len(LAYER_KEY_PREFIX) :]) for name in self._modules]

    def for_layer(self, layer: int) -> nn.Module:
        """The module of 1-based ``layer``."""
        return self._modules[f"{LAYER_KEY_PREFIX}{layer}"]

    def __getitem__(self, index: int | slice) -> Any:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())


@dataclass(frozen=True)
class LayerKeyedWeights:
    """Where a model keeps per-layer weights, for :func:`check_layer_keyed_weights`.

    Args:
        config_field: The config field that decides the layers, e.g. ``"exit_layers"``.
        config_value: Its value in the loaded config.
        layers: The layers the model built from that config.
        key_pattern: A regex whose group ``layer`` is the 1-based layer number in a state-dict key.
        offset: Added to the captured number to make it 1-based (``1`` for 0-based module lists).
    """

    config_field: str
    config_value: Any
    layers: tuple[int, ...]
    key_pattern: str
    offset: int = 0
    container_prefix: str | None = None

    def layer_of(self, key: str) -> int | None:
        match = re.search(self.key_pattern, key)
        return None if match is None else int(match.group("layer")) + self.offset


def keyed_containers(model: nn.Module) -> list[LayerKeyedWeights]:
    """One :class:`LayerKeyedWeights` per :class:`LayerKeyedModules` inside ``model``."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, LayerKeyedModules):
            found.append(
                LayerKeyedWeights(
                    config_field=module.config_field,
                    config_value=getattr(model.config, module.config_field, None),
                    layers=tuple(module.layers),
                    key_pattern=rf"^{re.escape(name)}\.{LAYER_KEY_PREFIX}(?P<layer>\d+)\.",
                    container_prefix=f"{name}.",
                )
            )
    return found


def check_layer_keyed_weights(model: nn.Module, loading_info: dict[str, list[str]]) -> None:
    """Raises ``ValueError`` when a checkpoint's per-layer weights sit at other layers than its config asks for.

    A checkpoint with none of the per-layer weights (a plain backbone) is fine: they start freshly initialized.

    Args:
        model: The model ``from_pretrained`` just built and loaded.
        loading_info: Its ``output_loading_info`` dict (``missing_keys``, ``unexpected_keys``).
    """
    missing = set(loading_info.get("missing_keys") or ())
    unexpected = list(loading_info.get("unexpected_keys") or ())
    model_keys = list(model.state_dict().keys())
    declared = keyed_containers(model) + list(getattr(model, "layer_keyed_weights", lambda: [])())
    for weights in declared:
        loaded = {weights.layer_of(k) for k in model_keys if k not in missing} - {None}
        extra = {weights.layer_of(k) for k in unexpected} - {None}
        in_checkpoint = sorted(loaded | extra)
        if weights.container_prefix is not None:
            unkeyed = [k for k in unexpected if k.startswith(weights.container_prefix) and weights.layer_of(k) is None]
            if unkeyed:
                raise ValueError(
                    f"The checkpoint stores {weights.container_prefix.rstrip('.')} by position ({unkeyed[0]!r}), "
                    f"not by layer (`{weights.container_prefix}{LAYER_KEY_PREFIX}<n>.`): it was saved by an older "
                    f"adaptive_hf. Rename the keys in the safetensors file: position k becomes the k-th layer of "
                    f"`{weights.config_field}` as it was saved ({weights.config_value!r} if config.json is unedited)."
                )
        if in_checkpoint and in_checkpoint != sorted(weights.layers):
            raise ValueError(
                f"The checkpoint does not match its config: `{weights.config_field}`={weights.config_value!r} builds "
                f"per-layer weights for layers {sorted(weights.layers)}, but the checkpoint's weights are for layers "
                f"{in_checkpoint}. Restore `{weights.config_field}` in config.json to the value the model was saved "
                "with (or pass it to from_pretrained); loading would put trained weights on the wrong layers."
            )
