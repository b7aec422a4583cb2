"""peft support: which modules of an adaptive model an adapter must train fully and save, and which it adapts.

LoRA and its kin freeze the base model and add low-rank updates to chosen layers. The parts a technique adds (exit
heads, halting units, routers, skim gates, frame samplers) are small and usually freshly initialized, so they are
trained in full and saved with the adapter through peft's ``modules_to_save``; :func:`peft_modules_to_save` lists
them from the technique's ``TechniqueSpec.adaptive_modules`` / ``adaptive_children``, plus the final classifier.
:func:`lora_config` and :func:`ia3_config` build whole configs for any adaptive model (text, image, video, readers);
:func:`check_peft_config` refuses, with the reason, a config that cannot wrap a model's adaptive parts.
``peft`` itself is imported only inside the config builders (extra ``peft``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .technique import TechniqueSpec, technique_of

# The final classifiers of the stock and adaptive classifiers; peft's SEQ_CLS task adds these names itself, listed
# here too so an adapter made without a task type still saves the head.
_CLASSIFIER_NAMES = ("classifier", "score")
# peft configs that prepend learned tokens or key/value prefixes instead of adapting layers.
_PREFIX_METHODS = ("PREFIX_TUNING", "CARTRIDGE")


def peft_modules_to_save(model: Any) -> list[str]:
    """The module names to pass as ``modules_to_save`` to a peft config for an adaptive model.

    Each name is a leaf module that holds weights inside one of the technique's adaptive parts
    (``TechniqueSpec.adaptive_modules`` and ``adaptive_children``), plus the model's final classifier (its own
    ``classifier``/``score``, every layer of a family's own head such as ModernBERT's ``head`` and
    ``classifier``, a timm model's head, or the head of an HF model inside it). Leaves, because peft
    replaces each saved module by a wrapper that can only be called: a container the model indexes
    (``exit_heads[k]``) cannot be wrapped, and peft's sequence-classification task also wraps every module whose
    name ends in ``classifier``, which would nest wrappers inside a wrapped head.

    Args:
        model: An adaptive model of any technique, not yet wrapped by peft.

    Raises:
        TypeError: When ``model`` is not an adaptive_hf model.
        ValueError: When the model has none of the modules its technique declares as adaptive.
    """
    spec = technique_of(model)
    modules = dict(model.named_modules())
    found = [leaf for name in adaptive_part_names(model, spec) for leaf in _weight_leaves(name, modules[name])]
    for name in final_classifier_names(model):
        found += _weight_leaves(name, modules[name])
    return list(dict.fromkeys(found))


def adaptive_part_names(model: Any, spec: TechniqueSpec | None = None) -> list[str]:
    """The names of the modules a technique added to ``model`` (exit heads, halting units, routers, gates).

    Args:
        model: An adaptive model, wrapped by peft or not.
        spec: Its technique's spec (read from the model when ``None``).

    Raises:
        ValueError: When the technique declares adaptive parts and the model has none of them.
    """
    spec = technique_of(model) if spec is None else spec
    children = dict(model.named_children())
    names = [name for name in spec.adaptive_children if children.get(name) is not None]
    for suffix in spec.adaptive_modules:
        names += [name for name, _ in model.named_modules() if name and _ends_with(name, suffix)]
    declared = (*spec.adaptive_modules, *spec.adaptive_children)
    if declared and not names:
        raise ValueError(
            f"{type(model).__name__} has no module named any of {list(declared)}, which the {spec.name!r} technique "
            "declares as its adaptive parts (TechniqueSpec.adaptive_modules / adaptive_children); peft could not "
            "train or save them."
        )
    # A part inside another (a gate inside a wrapped sampler) is covered by the outer one.
    return [name for name in names if not any(name.startswith(f"{other}.") for other in names)]


def final_classifier_names(model: nn.Module) -> list[str]:
    """The final classifier(s) of ``model``: its own ``classifier``/``score``, the head of each timm model inside it
    (``get_classifier()``), and the ``classifier``/``score`` of each HF model inside it (an HF video backbone).

    Args:
        model: An adaptive model, not yet wrapped by peft.
    """
    from transformers import PreTrainedModel

    children = dict(model.named_children())
    # A family's own classification head (ModernBERT's `head` + `classifier`, DeBERTa's `pooler` + `classifier`).
    names = [name for name in (*_CLASSIFIER_NAMES, *getattr(model, "_stock_head_names", ())) if name in children]
    by_identity = {id(module): name for name, module in model.named_modules()}
    for name, module in model.named_modules():
        if not name:
            continue
        if callable(getattr(module, "get_classifier", None)) and hasattr(module, "pretrained_cfg"):
            heads = module.get_classifier()  # timm: one head, or (head, distillation head)
            for head in heads if isinstance(heads, tuple) else (heads,):
                if id(head) in by_identity and any(True for _ in head.parameters()):
                    names.append(by_identity[id(head)])
        elif isinstance(module, PreTrainedModel):
            names += [f"{name}.{child}" for child in _CLASSIFIER_NAMES if child in dict(module.named_children())]
    return list(dict.fromkeys(names))


def _weight_leaves(name: str, module: nn.Module) -> list[str]:
    if any(True for _ in module.parameters(recurse=False)) or not any(True for _ in module.children()):
        return [name] if any(True for _ in module.parameters()) else []
    return [leaf for child, sub in module.named_children() for leaf in _weight_leaves(f"{name}.{child}", sub)]


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("peft support needs peft: pip install 'adaptive-hf[peft]'.") from error
    return peft


def lora_config(model: Any, r: int, *, target_modules: list[str] | str | None = None, **settings: Any) -> Any:
    """A ``peft.LoraConfig`` for any adaptive model that trains the adaptive parts in full and saves them.

    Args:
        model: An adaptive model (text, image, video or RNN reader), not yet wrapped by peft.
        r: LoRA rank, a positive integer.
        target_modules: The layers LoRA adapts; ``None`` takes :func:`default_target_modules`.
        **settings: Other ``LoraConfig`` fields (``lora_alpha``, ``lora_dropout``, ...). A ``modules_to_save``
            given here is added to the adaptive parts, not put in their place; a ``task_type`` replaces
            :func:`sequence_classification_task`'s choice (and is checked by :func:`check_peft_config`).

    Raises:
        ImportError: When peft is not installed (names the extra).
        ValueError: When ``r`` is not a positive integer.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"`r` (the LoRA rank) must be a positive integer; got {r!r}.")
    peft = _import_peft()
    modules_to_save = _saved_in_full(model, settings.pop("modules_to_save", None))
    if target_modules is None:
        target_modules = default_target_modules(model, modules_to_save, peft)
    config = peft.LoraConfig(
        task_type=settings.pop("task_type", sequence_classification_task(model)),
        r=r,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        **settings,
    )
    check_peft_config(model, config)
    return config


def ia3_config(
    model: Any,
    *,
    target_modules: list[str] | None = None,
    feedforward_modules: list[str] | None = None,
    **settings: Any,
) -> Any:
    """A ``peft.IA3Config`` for an adaptive model that trains the adaptive parts in full and saves them.

    Args:
        model: An adaptive model, not yet wrapped by peft.
        target_modules: The layers IA3 rescales; ``None`` takes peft's IA3 defaults for the backbone family, or
            every linear and convolution layer of the backbone (see :func:`default_target_modules`).
        feedforward_modules: Those of ``target_modules`` whose input (not output) is rescaled; ``None`` takes
            peft's defaults for the family, or none.
        **settings: Other ``IA3Config`` fields; a ``modules_to_save`` given here is added to the adaptive parts,
            a ``task_type`` replaces :func:`sequence_classification_task`'s choice.

    Raises:
        ImportError: When peft is not installed (names the extra).
        ValueError: When the backbone has no layer IA3 can rescale (an RNN reader's embeddings and LSTM cells).
    """
    peft = _import_peft()
    constants = peft.utils.constants
    modules_to_save = _saved_in_full(model, settings.pop("modules_to_save", None))
    backbone_type = _backbone_type(model)
    if target_modules is None:
        # peft's names for the family, resolved to the layers that are still linear: a switch-MoE layer puts an
        # Identity where the dense FFN's ``output.dense`` was.
        suffixes = constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(backbone_type) or []
        target_modules = _resolve_layers(model, suffixes, modules_to_save)
        if feedforward_modules is None and target_modules:
            suffixes = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(backbone_type) or []
            feedforward_modules = _resolve_layers(model, suffixes, modules_to_save)
        target_modules = target_modules or _layers_to_adapt(model, modules_to_save, with_embeddings=False)
    if not target_modules:
        raise ValueError(
            f"IA3 has no layer to rescale in {type(model).__name__}: it scales linear and convolution layers, and "
            "this model's backbone has none outside its adaptive parts (an RNN reader keeps its weights in token "
            "embeddings and LSTM cells). Use adaptive_hf.lora_config(model, r), whose LoRA adapts the embeddings."
        )
    config = peft.IA3Config(
        task_type=settings.pop("task_type", sequence_classification_task(model)),
        target_modules=target_modules,
        feedforward_modules=list(feedforward_modules or []),
        modules_to_save=modules_to_save,
        **settings,
    )
    check_peft_config(model, config)
    return config


def _saved_in_full(model: Any, extra: list[str] | None) -> list[str]:
    """The adaptive parts and final classifier, the backbone's batch norms (their running statistics change
    while the adapter trains, and must reload with it), and what the caller adds."""
    saved = peft_modules_to_save(model)
    saved += [name for name in _batch_norms(model) if not _inside(name, saved)]
    return list(dict.fromkeys(saved + list(extra or [])))


def _batch_norms(model: nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]


def sequence_classification_task(model: Any) -> str | None:
    """The peft ``task_type`` under which an adaptive classifier trains and reloads: ``"SEQ_CLS"`` or ``None``.

    Text models (``main_input_name == "input_ids"``) take ``"SEQ_CLS"``, whose wrapper passes the text keywords
    (``input_ids``, ``attention_mask``, ``labels``, ...). Image and video models take ``None``: the plain
    ``PeftModel`` passes the caller's ``pixel_values`` as they are. peft's ``SEQ_CLS`` task also saves every module
    whose name ends in ``classifier`` or ``score``; a model whose final classifier holds another module of such a
    name (the halting classifier is an exit head with its own ``classifier`` layer) would get one peft wrapper
    inside another, and ``PeftModel.from_pretrained`` then fails with a ``KeyError``; for it the task is ``None``
    too, and :func:`peft_modules_to_save` names the head's layers itself.

    Args:
        model: An adaptive model, not yet wrapped by peft.
    """
    if getattr(model, "main_input_name", "input_ids") != "input_ids":
        return None
    return None if _nested_classifier(model) else "SEQ_CLS"


def _nested_classifier(model: Any) -> str | None:
    children = dict(model.named_children())
    for head in _CLASSIFIER_NAMES:
        if head in children:
            for name, _ in children[head].named_modules():
                if name and name.rsplit(".", 1)[-1] in _CLASSIFIER_NAMES:
                    return f"{head}.{name}"
    return None


def check_peft_config(model: Any, config: Any) -> None:
    """Refuses a peft config that cannot wrap ``model``'s adaptive parts, saying why and what works instead.

    :func:`lora_config` and :func:`ia3_config` call it; call it on a config of your own before
    ``peft.get_peft_model``. Refused: prefix tuning (it prepends key/value prefixes through ``past_key_values``,
    which no adaptive model takes: rows leave the backbone at different layers and no key/value cache is kept);
    prompt tuning and p-tuning on image and video models (they prepend learned token embeddings to
    ``inputs_embeds``; text models take them, with ``modules_to_save`` covering the adaptive parts); methods with
    no ``modules_to_save`` (the adaptive parts would stay frozen and be left out of the adapter); a
    ``modules_to_save`` that misses some adaptive part; and ``task_type="SEQ_CLS"`` on a model whose classifier
    holds a ``classifier`` layer (see :func:`sequence_classification_task`).

    Args:
        model: An adaptive model, not yet wrapped by peft.
        config: A ``peft.PeftConfig``.

    Raises:
        TypeError: When ``model`` is not an adaptive_hf model.
        ValueError: When the config cannot wrap the model's adaptive parts (the message says why).
    """
    spec = technique_of(model)
    name, method = type(model).__name__, str(getattr(getattr(config, "peft_type", None), "value", "?"))
    token_inputs = getattr(model, "main_input_name", "input_ids") == "input_ids"
    if getattr(config, "is_prompt_learning", False) and (method in _PREFIX_METHODS or not token_inputs):
        raise ValueError(_prompt_learning_refusal(name, method))
    if not hasattr(config, "modules_to_save"):
        raise ValueError(
            f"peft's {method} config has no `modules_to_save`, so it cannot wrap the adaptive parts of {name} "
            f"({spec.name}: {', '.join(adaptive_part_names(model, spec)) or 'none'}): they would stay frozen and be "
            "left out of the saved adapter. Use a method that can save modules in full: "
            "adaptive_hf.lora_config(model, r), adaptive_hf.ia3_config(model), or another config with "
            "modules_to_save=adaptive_hf.peft_modules_to_save(model)."
        )
    saved = list(config.modules_to_save or [])
    if config.task_type == "SEQ_CLS":
        saved += list(_CLASSIFIER_NAMES)  # peft's SEQ_CLS wrapper adds these itself
        nested = _nested_classifier(model)
        if nested:
            raise ValueError(
                f"task_type='SEQ_CLS' makes peft wrap `{nested.split('.')[0]}` and the `{nested}` layer inside it "
                f"of {name}; such an adapter cannot be reloaded. Pass task_type=None (adaptive_hf.lora_config and "
                "ia3_config do); prompt-learning methods, which need SEQ_CLS, cannot wrap this model."
            )
    missing = [leaf for leaf in peft_modules_to_save(model) if not _covered(leaf, saved)]
    if missing:
        raise ValueError(
            f"The {method} config's modules_to_save={sorted(set(config.modules_to_save or []))} leaves out "
            f"{missing} of {name}: those adaptive parts would stay frozen and be left out of the saved adapter. "
            "Pass modules_to_save=adaptive_hf.peft_modules_to_save(model) (plus anything else you train in full)."
        )


def _prompt_learning_refusal(name: str, method: str) -> str:
    if method in _PREFIX_METHODS:
        return (
            f"peft's {method} cannot wrap {name}: it prepends learned key/value prefixes through "
            "`past_key_values`, and adaptive models take none (samples leave the backbone at different layers and "
            "no key/value cache is kept). Use adaptive_hf.lora_config(model, r) or adaptive_hf.ia3_config(model)."
        )
    return (
        f"peft's {method} cannot wrap {name}: it prepends learned token embeddings to a model's token input "
        "(`inputs_embeds`), and this model takes `pixel_values`. Use adaptive_hf.lora_config(model, r) or "
        "adaptive_hf.ia3_config(model)."
    )


def _covered(leaf: str, saved: list[str]) -> bool:
    # peft matches a modules_to_save entry against the end of a module's name, or the module holds the leaf.
    return any(_ends_with(leaf, entry) or _inside(leaf, [entry]) for entry in saved)


def refuse_nested_peft_wrappers(model: Any) -> None:
    """Refuses a model that peft wrapped so that its adapter cannot reload, or its adaptive parts cannot train.

    Two checks, at the first forward, before any training is spent:

    * peft's ``SEQ_CLS`` task saves every module whose name ends in ``classifier``; when the final classifier holds
      such a module (the halting classifier is an exit head with its own ``classifier`` layer), the wrappers nest,
      training runs, and ``PeftModel.from_pretrained`` later fails with a ``KeyError``.
    * In training, a peft method that left every adaptive part frozen (no ``modules_to_save`` for them) would train
      the backbone around untrained exit heads, halting units, routers or gates, and leave them out of the adapter.

    Reads peft's wrappers by their attributes, so core does not import peft.

    Args:
        model: The model peft wraps (its forward calls this).

    Raises:
        ValueError: When the classifier and a module inside it are both wrapped, or when a training forward finds
            the model adapted by peft with every adaptive part frozen.
    """
    for head in _CLASSIFIER_NAMES:
        wrapper = model._modules.get(head)
        # The nesting sits in the wrapper's trainable copy (``modules_to_save.<adapter>.classifier``).
        if _is_peft_wrapper(wrapper) and any(
            _is_peft_wrapper(inner) for _, inner in list(wrapper.named_modules())[1:]
        ):
            raise ValueError(
                f"peft wrapped `{head}` and a `classifier` layer inside it of {type(model).__name__} (its "
                "sequence-classification task saves every module whose name ends in 'classifier'); such an adapter "
                "cannot be reloaded. Build the config with adaptive_hf.lora_config(model, r), or pass "
                "task_type=None and modules_to_save=adaptive_hf.peft_modules_to_save(model)."
            )
    if model.training and torch.is_grad_enabled():
        _refuse_frozen_adaptive_parts(model)


def _refuse_frozen_adaptive_parts(model: nn.Module) -> None:
    if not any(_is_peft_tuner_layer(module) for module in model.modules()):
        return
    spec = technique_of(model)
    if not (spec.adaptive_modules or spec.adaptive_children):
        return
    modules = dict(model.named_modules())
    parts = adaptive_part_names(model, spec)
    if any(param.requires_grad for name in parts for param in modules[name].parameters()):
        return
    raise ValueError(
        f"peft adapted {type(model).__name__} but left every adaptive part frozen ({', '.join(parts)}): the "
        f"{spec.name} parts would not train and would be left out of the saved adapter. Build the config with "
        "adaptive_hf.lora_config(model, r) or adaptive_hf.ia3_config(model), or pass "
        "modules_to_save=adaptive_hf.peft_modules_to_save(model); adaptive_hf.check_peft_config(model, config) "
        "checks a config of your own."
    )


def _is_peft_wrapper(module: Any) -> bool:
    return module is not None and hasattr(module, "original_module") and hasattr(module, "modules_to_save")


def _is_peft_tuner_layer(module: Any) -> bool:
    # peft's BaseTunerLayer (LoRA, IA3, ... layers): it wraps the original layer as ``base_layer``.
    return hasattr(module, "base_layer") and hasattr(module, "active_adapters")


def _backbone_type(model: Any) -> str | None:
    # An adaptive config's model_type ("early_exit_bert") is unknown to peft; the backbone's own type is not.
    base_model = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return getattr(getattr(type(base_model), "config_class", None), "model_type", None)


def default_target_modules(model: Any, modules_to_save: list[str] | None = None, peft: Any = None) -> list[str]:
    """The layers LoRA adapts in ``model`` when the caller names none.

    peft's own defaults for the backbone family when it has them (``query``/``value`` for BERT); otherwise every
    linear layer of the backbone outside what is saved in full, or, for a backbone without any (a CNN), every dense
    convolution (not grouped: LoRA's low-rank update of a depthwise kernel is not the kernel's shape; not
    dynamically padded: LoRA's copy would not pad the same way). A backbone with neither (an RNN reader, whose
    LSTM cells LoRA has no layer type for) gets LoRA on its token embeddings.

    Args:
        model: An adaptive model, not yet wrapped by peft.
        modules_to_save: What is trained in full (default: :func:`peft_modules_to_save`).
        peft: The peft module (imported when ``None``).
    """
    peft = _import_peft() if peft is None else peft
    saved = peft_modules_to_save(model) if modules_to_save is None else list(modules_to_save)
    defaults = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(_backbone_type(model))
    if defaults:
        return list(defaults)
    return _layers_to_adapt(model, saved, with_embeddings=True)


def _layers_to_adapt(model: nn.Module, saved: list[str], *, with_embeddings: bool) -> list[str]:
    frozen = [name for name, module in model.named_modules() if name and not _inside(name, saved)]
    modules = dict(model.named_modules())
    # Transformers (and MLP-mixing CNNs) adapt their linear layers only, not a patch-embedding convolution.
    layers = [name for name in frozen if isinstance(modules[name], nn.Linear)]
    if not layers:
        layers = [name for name in frozen if _dense_convolution(modules[name])]
    if not layers and with_embeddings:
        layers = [name for name in frozen if isinstance(modules[name], nn.Embedding)]
    return layers


def _resolve_layers(model: nn.Module, suffixes: list[str], saved: list[str]) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if any(_ends_with(name, suffix) for suffix in suffixes)
        and not _inside(name, saved)
        and (isinstance(module, nn.Linear) or _dense_convolution(module))
    ]


def _dense_convolution(module: nn.Module) -> bool:
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        return False
    return type(module) is nn.Conv2d or tuple(module.kernel_size) == (1, 1)


def _inside(name: str, containers: list[str]) -> bool:
    return any(name == container or name.startswith(f"{container}.") for container in containers)


def _ends_with(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)
