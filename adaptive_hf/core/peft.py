"""peft support: which modules of an adaptive model an adapter must train fully and save.

LoRA and its kin freeze the base model and add low-rank updates to chosen linear layers. The parts a technique adds
(exit heads, halting units, routers) are small and usually freshly initialized, so they are trained in full and saved
with the adapter through peft's ``modules_to_save``; :func:`peft_modules_to_save` lists them from the technique's
``TechniqueSpec.adaptive_modules``. ``peft`` itself is imported only by :func:`lora_config` (extra ``peft``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .technique import technique_of

# The final classifiers of the stock and adaptive sequence classifiers; peft's SEQ_CLS task adds these names itself,
# listed here too so an adapter made without a task type still saves the head.
_CLASSIFIER_NAMES = ("classifier", "score")


def peft_modules_to_save(model: Any) -> list[str]:
    """The module names to pass as ``modules_to_save`` to a peft config for an adaptive model.

    Each name is a leaf module that holds weights inside one of the technique's adaptive parts
    (``TechniqueSpec.adaptive_modules``), plus the model's final classifier (every layer of a family's own head,
    such as ModernBERT's ``head`` and ``classifier``). Leaves, because peft replaces each saved module by a wrapper
    that can only be called: a container the model indexes (``exit_heads[k]``) cannot be wrapped, and peft's
    sequence-classification task also wraps every module whose name ends in ``classifier``, which would nest
    wrappers inside a wrapped head.

    Args:
        model: An adaptive model (early exits, halting, switch MoE, ...), not yet wrapped by peft.

    Raises:
        TypeError: When ``model`` is not an adaptive_hf model.
        ValueError: When the model has no module a technique declares as adaptive.
    """
    spec = technique_of(model)
    modules = dict(model.named_modules())
    found: list[str] = []
    for suffix in spec.adaptive_modules:
        matches = [name for name in modules if name and _ends_with(name, suffix)]
        if not matches:
            raise ValueError(
                f"{type(model).__name__} has no module named {suffix!r}, which the {spec.name!r} technique declares "
                "as one of its adaptive parts (TechniqueSpec.adaptive_modules); peft could not train or save it."
            )
        for name in matches:
            found += _weight_leaves(name, modules[name])
    # A family's own classification head (ModernBERT's `head` + `classifier`) is the final classifier too.
    for head in (*_CLASSIFIER_NAMES, *getattr(model, "_stock_head_names", ())):
        if head in dict(model.named_children()):
            found += _weight_leaves(head, modules[head])
    return list(dict.fromkeys(found))


def _weight_leaves(name: str, module: nn.Module) -> list[str]:
    if any(True for _ in module.parameters(recurse=False)) or not any(True for _ in module.children()):
        return [name] if any(True for _ in module.parameters()) else []
    return [leaf for child, sub in module.named_children() for leaf in _weight_leaves(f"{name}.{child}", sub)]


def lora_config(model: Any, r: int, *, target_modules: list[str] | str | None = None, **settings: Any) -> Any:
    """A ``peft.LoraConfig`` for sequence classification that trains the adaptive parts in full.

    Args:
        model: An adaptive model, not yet wrapped by peft.
        r: LoRA rank, a positive integer.
        target_modules: The linear layers LoRA adapts; ``None`` takes peft's defaults for the backbone family (e.g.
            ``query``/``value`` for BERT), or, for a family peft has no defaults for, every linear layer of the
            backbone outside the adaptive parts.
        **settings: Other ``LoraConfig`` fields (``lora_alpha``, ``lora_dropout``, ...).

    Raises:
        ImportError: When peft is not installed (names the extra).
        ValueError: When ``r`` is not a positive integer.
    """
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"`r` (the LoRA rank) must be a positive integer; got {r!r}.")
    try:
        import peft
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs peft: pip install 'adaptive-hf[peft]'.") from error
    modules_to_save = peft_modules_to_save(model)
    if target_modules is None:
        target_modules = _default_targets(model, modules_to_save, peft)
    return peft.LoraConfig(
        task_type=sequence_classification_task(model),
        r=r,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        **settings,
    )


def sequence_classification_task(model: Any) -> str | None:
    """The peft ``task_type`` under which an adaptive classifier trains and reloads: ``"SEQ_CLS"`` or ``None``.

    peft's ``SEQ_CLS`` task saves every module whose name ends in ``classifier`` or ``score``. A model whose final
    classifier holds another module of such a name (the halting classifier is an exit head with its own
    ``classifier`` layer) would get one peft wrapper inside another, and ``PeftModel.from_pretrained`` then fails
    with a ``KeyError``; for it the task is ``None``, and :func:`peft_modules_to_save` names the head's layers itself.

    Args:
        model: An adaptive model, not yet wrapped by peft.
    """
    return None if _nested_classifier(model) else "SEQ_CLS"


def _nested_classifier(model: Any) -> str | None:
    children = dict(model.named_children())
    for head in _CLASSIFIER_NAMES:
        if head in children:
            for name, _ in children[head].named_modules():
                if name and name.rsplit(".", 1)[-1] in _CLASSIFIER_NAMES:
                    return f"{head}.{name}"
    return None


def refuse_nested_peft_wrappers(model: Any) -> None:
    """Refuses a model whose final classifier peft wrapped twice (one wrapper inside another).

    peft's ``SEQ_CLS`` task saves every module whose name ends in ``classifier``; when the final classifier holds such
    a module (the halting classifier is an exit head with its own ``classifier`` layer), the wrappers nest, training
    runs, and ``PeftModel.from_pretrained`` later fails with a ``KeyError``. Refusing at the first forward says why
    before any training is spent. Reads peft's wrapper by its attributes, so core does not import peft.

    Args:
        model: The model peft wraps (its forward calls this).

    Raises:
        ValueError: When the classifier and a module inside it are both wrapped.
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


def _is_peft_wrapper(module: Any) -> bool:
    return module is not None and hasattr(module, "original_module") and hasattr(module, "modules_to_save")


def _default_targets(model: Any, modules_to_save: list[str], peft: Any) -> list[str]:
    # An adaptive config's model_type ("early_exit_bert") is unknown to peft; the backbone's own type is not.
    base_model = getattr(model, getattr(model, "base_model_prefix", ""), None)
    backbone_type = getattr(getattr(type(base_model), "config_class", None), "model_type", None)
    defaults = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(backbone_type)
    if defaults:
        return list(defaults)
    # Every linear layer of the backbone, except what is saved in full (a router inside a MoE layer, say).
    saved = set(modules_to_save)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name.startswith(f"{model.base_model_prefix}.")
        and name not in saved
        and name.rsplit(".", 1)[-1] not in _CLASSIFIER_NAMES
    ]


def _ends_with(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)
