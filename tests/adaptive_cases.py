"""The shared tester's case registry: every technique x backbone family, as tiny random models.

In the manner of transformers' ``ModelTesterMixin`` and peft's common tester, each :class:`AdaptiveCase` says how
to build a tiny random model, how to make a batch (with padding), which output fields record per-sample compute,
what the plain backbone computes, and how to count the work the layers really did. ``test_shared_invariants.py``
and ``test_shared_fuzz.py`` run every invariant over ``CASES``. The technique is read from the model with
``adaptive_hf.technique_of`` and full compute is ``adaptive_hf.full_compute``: no ``hasattr`` guessing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import transformers
from text_testers import COMMON, FAMILIES, VOCAB, padded_batch, split_threshold, tiny_backbone_config
from torch import nn

import adaptive_hf
from adaptive_hf.early_exit.policies import exit_score

Batch = dict[str, torch.Tensor]
NUM_LABELS = 3
NUM_LAYERS = COMMON["num_hidden_layers"]


@dataclass(frozen=True)
class Mode:
    """Runtime settings under which some rows (or tokens, frames) stop early.

    Args:
        name: Shown in test ids.
        settings: ``settings(model, batch) -> {config field: value}``; may look at the batch (e.g. to put a
            threshold between two rows' scores so both early and late stops happen).
        trim_padding: One at a time, each row is cut to its real length; ``False`` keeps its padding (for
            decoders, left-padded, and for capacity counted over the padded sequence).
        mixed: Whether the settings guarantee that some rows stop early and others do not.
    """

    name: str
    settings: Callable[[nn.Module, Batch], dict[str, Any]] = lambda model, batch: {}
    trim_padding: bool = True
    mixed: bool = True


@dataclass
class AdaptiveCase:
    """One technique x family: a tiny random model and how to check it.

    Args:
        name: Test id, ``"<technique>/<family>[-variant]"``.
        technique: The registered ``TechniqueSpec`` name the model must report.
        builder: ``builder(**config overrides) -> model`` in eval mode, deterministic.
        batch_maker: ``batch_maker(batch_size, seed, min_len) -> inputs`` (text batches are padded).
        modes: Runtime settings to run the adaptive invariants under; the first is the default.
        sample_fields: Output fields with one entry per sample (batch first).
        token_fields: ``(batch, seq)`` output fields, compared on real tokens.
        summed_fields: Output fields summed over the batch, e.g. MoE expert counts.
        reference: ``reference(model, batch) -> logits`` of the plain backbone, or ``None``.
        full_fields: ``full_fields(model, batch, output)`` asserts the compute fields at full compute.
        work: ``work(model, batch) -> (observed, expected, output)``: units of work counted by hooks in eval,
            and what the output fields say must have run; ``None`` when there is nothing to count.
        auto_class: The transformers Auto class that reloads a saved model.
        aux_off: Training-field overrides that turn the auxiliary loss terms off.
        loss_is_task_loss_without_aux: With ``aux_off``, the loss is the cross-entropy of the returned logits.
        aux_parameters: Name prefixes of parameters the training loss must reach (heads, units, routers, gates).
        remote_code: Included in the ``trust_remote_code`` check in a fresh process.
        token_inputs: Whether the model takes token ids (``input_ids``), for the id checks.
        vocab_size: Vocabulary size of token models.
        variants: Structural overrides the full-compute check also runs on (e.g. each pooling), each with the
            error it must raise or ``None``.
        xfail_work: Reason the work check is a known gap (an open issue), or ``None``.
        labels_from_ids: The labels are the token ids (a causal LM).
        save_overrides: Structural overrides for the save/load check (e.g. experts that differ from each other).
        never_stopping: Makes the adaptive path run but never stop early (it must then equal the backbone too).
        stopped_early: ``stopped_early(output, batch)``: whether the output shows early stops (so a mixed mode
            really exercises compaction).
    """

    name: str
    technique: str
    builder: Callable[..., nn.Module]
    batch_maker: Callable[..., Batch]
    modes: tuple[Mode, ...] = (Mode("default", mixed=False),)
    sample_fields: tuple[str, ...] = ()
    token_fields: tuple[str, ...] = ()
    summed_fields: tuple[str, ...] = ()
    reference: Callable[[nn.Module, Batch], torch.Tensor] | None = None
    full_fields: Callable[[nn.Module, Batch, Any], None] | None = None
    work: Callable[[nn.Module, Batch], tuple[list[int], list[int], Any]] | None = None
    auto_class: Any = transformers.AutoModelForSequenceClassification
    aux_off: dict[str, Any] | Callable[[nn.Module], dict[str, Any]] = field(default_factory=dict)
    loss_is_task_loss_without_aux: bool = True
    aux_parameters: tuple[str, ...] = ()
    remote_code: bool = False
    token_inputs: bool = True
    vocab_size: int = VOCAB
    variants: tuple[tuple[dict[str, Any], type[Exception] | None], ...] = ()
    xfail_work: str | None = None
    labels_from_ids: bool = False
    save_overrides: dict[str, Any] = field(default_factory=dict)
    never_stopping: Callable[[nn.Module], nn.Module] | None = None
    stopped_early: Callable[[Any, Batch], bool] | None = None

    def build(self, **overrides) -> nn.Module:
        """The tiny random model in eval mode (the same weights on every call)."""
        return self.builder(**overrides)

    def shared_model(self) -> nn.Module:
        """One built model per case and process, for checks that leave it as they found it (bad inputs, fuzz)."""
        cached = _SHARED_MODELS.get(self.name)
        if cached is None:
            cached = _SHARED_MODELS[self.name] = self.build()
        return cached

    def batch(self, batch_size: int = 6, seed: int = 0, min_len: int = 3) -> Batch:
        """Inputs for ``batch_size`` rows; text rows get random lengths (row 0 the longest) and padding."""
        return self.batch_maker(batch_size, seed, min_len)

    def labels(self, batch: Batch) -> torch.Tensor:
        """Labels that fit the model: class ids, or the token ids for a causal LM."""
        if self.labels_from_ids:
            return batch["input_ids"].clone()
        rows = next(iter(batch.values())).size(0)
        return torch.arange(rows) % NUM_LABELS

    def aux_off_settings(self, model: nn.Module) -> dict[str, Any]:
        """The config overrides that turn the auxiliary loss terms off for ``model``."""
        return dict(self.aux_off(model) if callable(self.aux_off) else self.aux_off)

    def __repr__(self) -> str:
        return self.name


_SHARED_MODELS: dict[str, nn.Module] = {}
PACKAGE_DIR = str(__import__("pathlib").Path(adaptive_hf.__file__).parent)
# Known gaps, each an open issue: the checks run and are expected to fail until the fix lands (strict xfails).
IDS_GAP = "issue 14: token ids out of range (even in padded positions) give torch's IndexError"
LABELS_GAP = "issue 14: labels out of [0, num_labels) give torch's 'Target out of bounds'"
MOE_GAP = "issue 14: MoE models on HF families have no input checks (shapes, dtypes, empty batches, labels)"


@contextlib.contextmanager
def config_values(model: nn.Module, settings: dict[str, Any]) -> Iterator[None]:
    """Sets config fields inside the block and restores them afterwards."""
    saved = {name: getattr(model.config, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(model.config, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(model.config, name, value)


def rows_of(batch: Batch, row: int, trim: bool) -> Batch:
    """Row ``row`` of a batch, cut to its real length when ``trim`` (right padding only)."""
    single = {key: value[row : row + 1] for key, value in batch.items()}
    if trim and "attention_mask" in batch:
        length = int(batch["attention_mask"][row].sum())
        single = {key: value[:, :length] if value.dim() == 2 else value for key, value in single.items()}
    return single


def real_positions(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-token logits at real tokens only (a padding position's output is not part of the contract)."""
    if logits.dim() == 3 and "attention_mask" in batch:
        return logits[batch["attention_mask"].bool()]
    return logits


def count_rows(modules, size=lambda args: args[0].size(0)) -> tuple[list[int], Callable[[], None]]:
    """Registers forward hooks that record ``size(args)`` of every call; returns the list and a remover."""
    seen: list[int] = []
    handles = [module.register_forward_hook(lambda m, args, out: seen.append(int(size(args)))) for module in modules]
    return seen, lambda: [handle.remove() for handle in handles]


def run_counted(model, batch, modules, size=lambda args: args[0].size(0)):
    """Runs ``model(**batch)`` without gradients with hooks counting rows at ``modules``."""
    seen, remove = count_rows(modules, size)
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        remove()
    return seen, out


# ------------------------------------------------------------------------------------------------- early exits
def _split_mode(policy: str) -> Mode:
    def settings(model, batch):
        with config_values(model, {"exit_policy": "none"}), torch.no_grad():
            first = model(**batch, output_exit_logits=True).exit_logits[0]
        if policy == "patience":
            return {"exit_policy": "patience", "patience": 1, "exit_threshold": None}
        return {"exit_policy": policy, "exit_threshold": split_threshold(exit_score(policy, first))}

    return Mode(policy, settings, mixed=policy != "patience")


EXIT_MODES = tuple(_split_mode(policy) for policy in ("confidence", "entropy", "margin", "patience"))


def _exits_differ(out, batch) -> bool:
    return len(set(out.exit_layer.tolist())) > 1


def _exit_full_fields(model, batch, out):
    assert out.exit_layer.tolist() == [model.config.exit_layers[-1]] * out.logits.size(0)


def _exit_work(units_of):
    def work(model, batch):
        seen, out = run_counted(model, batch, units_of(model))
        exits = out.exit_layer.tolist()
        expected = [sum(1 for e in exits if e > layer) for layer in range(len(units_of(model)) or NUM_LAYERS)]
        return seen, [n for n in expected if n > 0], out

    return work


def _text_units(model):
    adapter = model.adapter
    if model.config.model_type.endswith("albert"):
        # ALBERT shares its layer group across depth: the group's hook fires once per layer application.
        return list(adapter.base_model.encoder.albert_layer_groups)
    return list(adapter.layer_modules())


def _text_exit_work(model, batch):
    seen, out = run_counted(model, batch, _text_units(model))
    exits = out.exit_layer.tolist()
    expected = [sum(1 for e in exits if e > layer) for layer in range(NUM_LAYERS)]
    return seen, [n for n in expected if n > 0], out


def text_batch(pad_token_id: int = 0, max_len: int = 10, left: bool = False):
    def make(batch_size, seed, min_len):
        ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=pad_token_id, min_len=min_len)
        if left:  # decoders are left-padded, as generation uses
            ids, mask = ids.flip(1), mask.flip(1)
        return {"input_ids": ids, "attention_mask": mask}

    return make


def _pad_id(family: str) -> int:
    return 1 if family in ("roberta", "xlm-roberta", "mpnet") else 0


def _early_exit_text(family: str) -> AdaptiveCase:
    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, "exit_head": "linear", **overrides}
        config = tiny_backbone_config(family)
        model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(config, **settings)
        return model.eval()

    def reference(model, batch):
        base = getattr(model, model.base_model_prefix)
        output = base(**batch)
        pooling = model.config.exit_pooling
        if pooling == "mean":
            weights = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (output.last_hidden_state * weights).sum(1) / weights.sum(1)
        elif pooling == "cls":
            pooled = output.last_hidden_state[:, 0]
        else:
            pooled = output.pooler_output
        return model.exit_heads[-1](pooled)

    has_pooler = adaptive_hf.core.backbones.TEXT_ENCODER_ADAPTERS[family].has_pooler
    return AdaptiveCase(
        name=f"early_exit/{family}",
        technique="early_exit",
        builder=build,
        batch_maker=text_batch(_pad_id(family)),
        modes=EXIT_MODES,
        sample_fields=("exit_layer",),
        reference=reference,
        full_fields=_exit_full_fields,
        work=_text_exit_work,
        stopped_early=_exits_differ,
        aux_off=lambda model: {"exit_loss_weights": [0.0] * (len(model.config.exit_layers) - 1) + [1.0]},
        aux_parameters=("exit_heads.0.",),
        remote_code=True,
        save_overrides={"exit_layers": [1, 3]},
        variants=(
            ({"exit_pooling": "mean"}, None),
            ({"exit_pooling": "cls"}, None),
            ({"exit_pooling": "pooler"}, None if has_pooler else ValueError),
        ),
    )


TINY_TIMM_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2)
# name -> (timm architecture, model_args, exit settings, whether every exit policy runs on it)
TIMM_EXIT_CASES = {
    "vit": ("vit_tiny_patch16_224", TINY_TIMM_VIT, {}, True),
    "vit_mean": ("vit_tiny_patch16_224", dict(TINY_TIMM_VIT, global_pool="avg", class_token=False), {}, False),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(TINY_TIMM_VIT, depth=3), {}, False),
    "resnet_stage": ("test_resnet", {}, {}, False),
    "resnet_block": ("test_resnet", {"layers": [2, 1, 1, 1]}, {"exit_granularity": "block"}, True),
    "efficientnet": ("test_efficientnet", {}, {}, True),
    "efficientnet_tf_same": ("test_efficientnet", {"pad_type": "same"}, {}, False),
    "mobilenetv3_block": ("mobilenetv3_small_050", {}, {"exit_granularity": "block", "exit_layers": [2, 5, 8]}, False),
    "convnext_block": ("test_convnext", {}, {"exit_granularity": "block"}, True),
}
REMOTE_TIMM_EXIT_CASES = ("vit", "efficientnet")


def image_batch(size: int = 32, channels: int = 3):
    def make(batch_size, seed, min_len=None):
        generator = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(batch_size, channels, size, size, generator=generator)}

    return make


def _image_exit_case(name, build, units_of, reference, remote, all_modes) -> AdaptiveCase:
    return AdaptiveCase(
        name=name,
        technique="early_exit",
        builder=build,
        batch_maker=image_batch(),
        modes=EXIT_MODES if all_modes else EXIT_MODES[:1],
        sample_fields=("exit_layer",),
        reference=reference,
        full_fields=_exit_full_fields,
        work=_exit_work(units_of),
        stopped_early=_exits_differ,
        auto_class=transformers.AutoModelForImageClassification,
        aux_off=lambda model: {"exit_loss_weights": [0.0] * (len(model.config.exit_layers) - 1) + [1.0]},
        aux_parameters=("exit_heads.0.",),
        remote_code=remote,
        token_inputs=False,
    )


def _early_exit_timm(case: str) -> AdaptiveCase:
    architecture, model_args, defaults, all_modes = TIMM_EXIT_CASES[case]

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, **defaults, **overrides}
        model = adaptive_hf.EarlyExitTimmForImageClassification.from_timm(
            architecture, model_args=dict(model_args), **settings
        )
        return model.eval()

    return _image_exit_case(
        f"early_exit/timm-{case}",
        build,
        lambda model: list(model.adapter.units),
        lambda model, batch: model.timm_model(batch["pixel_values"]),
        case in REMOTE_TIMM_EXIT_CASES,
        all_modes,
    )


TINY_HF_VIT = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=37,
    image_size=32,
    patch_size=8,
    hidden_dropout_prob=0.1,
)


def _early_exit_hf_vit() -> AdaptiveCase:
    def build(**overrides):
        torch.manual_seed(0)
        config = adaptive_hf.EarlyExitViTConfig(**TINY_HF_VIT, **{"num_labels": NUM_LABELS, **overrides})
        return adaptive_hf.EarlyExitViTForImageClassification(config).eval()

    def reference(model, batch):
        # The stock ViT image classifier with the same weights (its classifier is the final exit).
        plain = transformers.ViTForImageClassification(transformers.ViTConfig(**TINY_HF_VIT, num_labels=NUM_LABELS))
        plain.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")}, strict=True
        )
        return plain.eval()(**batch).logits

    return _image_exit_case("early_exit/hf-vit", build, lambda model: list(model.vit.layers), reference, True, True)


# ------------------------------------------------------------------------------------------------------ halting
FFN_INPUT_MODULE = {"distilbert": "ffn", "albert": "ffn", "mpnet": "intermediate"}


def _randomize_units(model):
    # Trained-looking halting units, so samples/tokens halt at different layers.
    for unit in model.halting_units:
        torch.nn.init.normal_(unit.proj.weight, std=0.6)
        torch.nn.init.zeros_(unit.proj.bias)


def _halted_early(out, batch) -> bool:
    steps = out.halting_steps
    if steps.dim() == 2 and "attention_mask" in batch:
        steps = steps[batch["attention_mask"].bool()]
    return int(steps.min()) < NUM_LAYERS


def _halting_full_fields(model, batch, out):
    steps = out.halting_steps
    layers = len(model.halting_units)
    if model.config.halting_granularity == "sample":
        assert steps.tolist() == [layers] * steps.size(0)
    elif "attention_mask" in batch:
        assert torch.equal(steps, batch["attention_mask"] * layers)
    else:
        assert bool((steps == layers).all())


def _halting_work(sample_units, token_units):
    def work(model, batch):
        if model.config.halting_granularity == "sample":
            seen, out = run_counted(model, batch, sample_units(model))
            expected = [int((out.halting_steps >= n).sum()) for n in range(1, len(model.halting_units) + 1)]
            return seen, [count for count in expected if count > 0], out
        modules = token_units(model)
        seen, out = run_counted(model, batch, modules, size=lambda args: args[0].shape[:-1].numel())
        steps = out.halting_steps
        mask = batch.get("attention_mask", torch.ones_like(steps))
        real = int(mask.sum())
        expected = [int((steps >= n).sum()) for n in range(1, len(model.halting_units) + 1)]
        # Until a token halts, the backbone's own layer runs on the padded batch; afterwards only active tokens.
        return seen, [mask.numel() if count == real else count for count in expected if count > 0], out

    return work


def _text_ffn_modules(model):
    family = model.config.model_type.removeprefix("halting_")
    suffix = FFN_INPUT_MODULE.get(family, "intermediate")
    return [m for name, m in model.named_modules() if name.split(".")[-1] == suffix]


def _halting_text(family: str, granularity: str, method: str) -> AdaptiveCase:
    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, "halting": method, "halting_granularity": granularity}
        # PonderNet's threshold is on the probability of having halted
        settings |= {"halting_threshold": 0.9 if method == "act" else 0.5, **overrides}
        config = tiny_backbone_config(family)
        model = adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(config, **settings)
        _randomize_units(model)
        if family == "mpnet":  # a bias as large as trained ones, so a misplaced bias row or column shows
            torch.nn.init.normal_(model.mpnet.encoder.relative_attention_bias.weight, std=2.0)
        return model.eval()

    def reference(model, batch):
        hidden = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).float()
        return model.classifier((hidden * weights).sum(1) / weights.sum(1))

    return AdaptiveCase(
        name=f"halting/{family}-{granularity}-{method}",
        technique="halting",
        builder=build,
        batch_maker=text_batch(_pad_id(family)),
        modes=(Mode("threshold", mixed=True),),
        sample_fields=("halting_steps", "ponder_cost") if granularity == "sample" else ("ponder_cost",),
        token_fields=("halting_steps",) if granularity == "token" else (),
        reference=reference,
        full_fields=_halting_full_fields,
        work=_halting_work(_text_units, _text_ffn_modules),
        never_stopping=never_halting,
        stopped_early=_halted_early,
        aux_off={"ponder_cost": 0.0, "kl_weight": 0.0},
        loss_is_task_loss_without_aux=method == "act",
        aux_parameters=("halting_units.",),
        remote_code=(family, granularity, method) == ("distilbert", "token", "pondernet"),
    )


def never_halting(model):
    """The halting path with lambda ~ 0: every unit runs, nothing halts before the last layer."""
    for unit in model.halting_units:
        torch.nn.init.constant_(unit.proj.bias, -30.0)
    return model


def _halting_timm_vit(granularity: str, method: str) -> AdaptiveCase:
    threshold = 0.9 if method == "act" else 0.5  # PonderNet's threshold is on the probability of having halted

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"halting": method, "halting_granularity": granularity, "halting_threshold": threshold}
        config = adaptive_hf.HaltingTimmConfig(
            architecture="vit_tiny_patch16_224",
            model_args=TINY_TIMM_VIT,
            num_labels=NUM_LABELS,
            **{**settings, **overrides},
        )
        model = adaptive_hf.HaltingTimmForImageClassification(config)
        _randomize_units(model)
        return model.eval()

    return AdaptiveCase(
        name=f"halting/timm-vit-{granularity}-{method}",
        technique="halting",
        builder=build,
        batch_maker=image_batch(),
        modes=(Mode("threshold", mixed=True),),
        sample_fields=("halting_steps", "ponder_cost"),
        reference=lambda model, batch: model.timm_model(batch["pixel_values"]),
        full_fields=_halting_full_fields,
        work=_halting_work(lambda m: list(m.timm_model.blocks), lambda m: [b.mlp for b in m.timm_model.blocks]),
        never_stopping=never_halting,
        stopped_early=_halted_early,
        auto_class=transformers.AutoModelForImageClassification,
        aux_off={"ponder_cost": 0.0, "kl_weight": 0.0},
        loss_is_task_loss_without_aux=method == "act",
        aux_parameters=("halting_units.",),
        remote_code=(granularity, method) == ("token", "act"),
        token_inputs=False,
    )


# -------------------------------------------------------------------------------------------------- switch MoE
MOE_TEXT_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "gpt2", "llama"]
MOE_TIMM_ARGS = {"img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 4}
DECODERS = ("gpt2", "llama")


def moe_dense_config(family: str, num_labels: int = NUM_LABELS):
    """A tiny random dense config of ``family`` (a text family or ``"vit"``)."""
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=64)
        config.pad_token_id = 0
    elif family == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=40,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
        )
    elif family == "vit":
        config = transformers.ViTConfig(
            image_size=16,
            patch_size=4,
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=37,
        )
    else:
        config = tiny_backbone_config(family)
    config.num_labels = num_labels
    return config


def moe_dense_model(family: str, causal_lm: bool = False) -> nn.Module:
    """The dense model a MoE case upcycles (seeded: the same weights on every call)."""
    torch.manual_seed(0)
    if family == "timm":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=NUM_LABELS, **MOE_TIMM_ARGS)
    config = moe_dense_config(family)
    if causal_lm:
        return transformers.AutoModelForCausalLM.from_config(config).eval()
    if family == "vit":
        return transformers.ViTForImageClassification(config).eval()
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def _moe_full_fields(model, batch, out):
    assert bool((out.dropped_fraction == 0).all())
    if "attention_mask" in batch:  # every real token (and no padding token) reached its experts
        real = int(batch["attention_mask"].sum()) * model.config.num_experts_per_tok
        assert out.expert_counts.sum(-1).tolist() == [real] * len(model.config.moe_layers)


def _moe_work(model, batch):
    modules = [module.experts for module in model.moe_modules()]
    seen, out = run_counted(model, batch, modules)
    return seen, out.expert_counts.sum(-1).tolist(), out


MOE_MODES = (
    Mode("dropless", lambda model, batch: {"capacity_factor": 0.0}, mixed=False),
    # Capacity counted per (padded) sequence: the same row alone keeps its padding to keep its capacity.
    Mode("capacity", lambda model, batch: {"capacity_factor": 1.0, "capacity_group": "sequence"}, trim_padding=False),
)


def _moe(family: str, causal_lm: bool = False) -> AdaptiveCase:
    def build(**overrides):
        settings = {"num_experts": 4, "moe_layers": [2, 3], "capacity_factor": 0.0}
        model = adaptive_hf.upcycle(moe_dense_model(family, causal_lm), **{**settings, **overrides}, seed=1)
        return model.eval()

    def reference(model, batch):
        dense = moe_dense_model(family, causal_lm)
        return dense(batch["pixel_values"]) if family == "timm" else dense(**batch).logits

    image = family in ("vit", "timm")
    decoder = family in DECODERS
    name = f"switch_moe/{family}" + ("-causal-lm" if causal_lm else "")
    return AdaptiveCase(
        name=name,
        technique="switch_moe",
        builder=build,
        batch_maker=image_batch(16) if image else text_batch(_pad_id(family), max_len=9, left=decoder),
        modes=tuple(Mode(m.name, m.settings, trim_padding=m.trim_padding and not decoder, mixed=m.mixed)
                    for m in MOE_MODES),  # fmt: skip
        summed_fields=("expert_counts",),
        stopped_early=lambda out, batch: float(out.dropped_fraction.max()) > 0,
        reference=reference,
        full_fields=_moe_full_fields,
        work=None if image else _moe_work,
        auto_class=(
            transformers.AutoModelForCausalLM
            if causal_lm
            else transformers.AutoModelForImageClassification
            if image
            else transformers.AutoModelForSequenceClassification
        ),
        aux_off={"router_aux_loss_coef": 0.0, "router_z_loss_coef": 0.0},
        loss_is_task_loss_without_aux=not causal_lm,
        aux_parameters=("",),
        remote_code=family in ("bert", "timm") or causal_lm,
        token_inputs=not image,
        xfail_work="issue 13: the expert bias, activation and `where` run over dropped and padding rows",
        save_overrides={"expert_noise": 0.1},
        labels_from_ids=causal_lm,
    )


# ------------------------------------------------------------------------------------------------- RNN readers
READER_VOCAB = 60


def reader_batch(batch_size, seed, min_len=1, max_len=11):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(min_len, max_len), max_len + 1, (batch_size,), generator=generator)
    lengths[0] = max_len
    ids = torch.randint(1, READER_VOCAB, (batch_size, max_len), generator=generator)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _reader(kind: str) -> AdaptiveCase:
    from adaptive_hf.readers import jump_lstm as jump_module
    from adaptive_hf.readers import skim_rnn as skim_module

    def build(**overrides):
        torch.manual_seed(0)
        base = dict(vocab_size=READER_VOCAB, embedding_size=8, hidden_size=12, num_labels=NUM_LABELS)
        base["classifier_dropout"] = 0.0
        if kind == "skim_rnn":
            config = adaptive_hf.SkimRnnConfig(**{**base, "small_hidden_size": 3, **overrides})
            model = adaptive_hf.SkimRnnForSequenceClassification(config)
            decision = model.skim_gate
        else:
            config = adaptive_hf.JumpLstmConfig(**{**base, "read_tokens": 2, "max_jump": 3, "max_jumps": 3, **overrides})
            model = adaptive_hf.JumpLstmForSequenceClassification(config)
            decision = model.jump_policy
        with torch.no_grad():  # decisions mixed and far from ties
            model.embeddings.weight.normal_(0.0, 1.0)
            decision.weight.normal_(0.0, 2.0)
            decision.bias.normal_(0.0, 0.5)
        return model.eval()

    def reference(model, batch):
        """The last state of a torch.nn.LSTM with the big cell's weights, each row alone over its real tokens."""
        cell = model.big_cell
        lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").data.copy_(getattr(cell, name))
        states = []
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            tokens = ids[: int(mask.sum())]
            if len(tokens) == 0:
                states.append(torch.zeros(cell.hidden_size))
                continue
            _, (h, _) = lstm(model.embeddings(tokens)[None])
            states.append(h[0, 0])
        return model.classifier(torch.stack(states))

    def full_fields(model, batch, out):
        assert out.tokens_read.tolist() == batch["attention_mask"].sum(1).tolist()

    def work(model, batch):
        """Rows the big cell (and the small one) really ran on, patched at the module functions that run them."""
        counts = {"big": 0, "small": 0}
        if kind == "skim_rnn":
            patches = {
                "_small_update": ("small", lambda v, c, h, s: v[0].size(0)),
                "_big_update": ("big", lambda g, c, h: g.size(0)),
                "_read_rows": ("big", lambda x, h, c, r, big: x.size(0)),
            }
            module = skim_module
        else:
            patches = {
                "lstm_steps": (
                    "big",
                    lambda inputs, lengths, *rest: (
                        inputs.size(0) * inputs.size(1) if lengths is None else int(lengths.sum())
                    ),
                )
            }
            module = jump_module
        originals = {name: getattr(module, name) for name in patches}

        def counting(name, key, size):
            def wrapper(*args):
                counts[key] += size(*args)
                return originals[name](*args)

            return wrapper

        try:
            for name, (key, size) in patches.items():
                setattr(module, name, counting(name, key, size))
            with torch.no_grad():
                out = model(**batch)
        finally:
            for name, original in originals.items():
                setattr(module, name, original)
        if kind == "skim_rnn":
            return [counts["big"], counts["small"]], [int(out.tokens_read.sum()), int(out.tokens_skimmed.sum())], out
        return [counts["big"]], [int(out.tokens_read.sum())], out

    skim = kind == "skim_rnn"
    return AdaptiveCase(
        name=f"readers/{kind}",
        technique="readers",
        builder=build,
        batch_maker=lambda batch_size, seed, min_len: reader_batch(batch_size, seed, min_len=1),
        modes=(Mode("adaptive", mixed=True),),
        sample_fields=("tokens_read", "tokens_skimmed", "tokens_jumped", "num_decisions", "num_jumps"),
        reference=reference,
        full_fields=full_fields,
        work=work,
        aux_off=(
            {"skim_penalty": 0.0}
            if skim
            else {"policy_loss_coef": 0.0, "baseline_loss_coef": 0.0, "entropy_coef": 0.0, "full_reading_loss_coef": 0.0}
        ),
        aux_parameters=("skim_gate." if skim else "jump_policy.",),
        stopped_early=lambda out, batch: int((out.tokens_skimmed if skim else out.tokens_jumped).sum()) > 0,
        remote_code=True,
        vocab_size=READER_VOCAB,
    )


# ------------------------------------------------------------------------------------------------------- video
VIDEO_FRAMES = 6
VIDEO_SIZE = 32
HF_VIDEO_FRAMES = 4
TINY_HF_VIDEO = dict(image_size=VIDEO_SIZE, patch_size=8, num_channels=1, num_frames=HF_VIDEO_FRAMES, hidden_size=16)
TINY_HF_VIDEO.update(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
HF_VIDEO_CONFIGS = {
    "videomae": lambda: transformers.VideoMAEConfig(tubelet_size=2, **TINY_HF_VIDEO),
    "timesformer": lambda: transformers.TimesformerConfig(**TINY_HF_VIDEO),
}
VIDEO_BACKBONES = {"resnet": "test_resnet", "efficientnet": "test_efficientnet"}


def video_batch(batch_size, seed, min_len=None, frames=VIDEO_FRAMES):
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch_size, frames, 1, VIDEO_SIZE, VIDEO_SIZE, generator=generator)}


def _video(clip: str, sampler: str, aggregation: str = "mean") -> AdaptiveCase:
    from adaptive_hf.video.samplers import uniform_indices

    hf = clip in HF_VIDEO_CONFIGS

    def build(**overrides):
        torch.manual_seed(0)
        settings = dict(num_labels=NUM_LABELS, num_frames=VIDEO_FRAMES, glance_resolution=16, glance_width=4)
        settings |= dict(sampler=sampler, exit_threshold=0.5, frame_budget=HF_VIDEO_FRAMES if hf else 4)
        settings |= overrides
        if hf:
            model = adaptive_hf.FrameSamplingVideoClassifier.from_hf_video(HF_VIDEO_CONFIGS[clip](), **settings)
            return model.eval()
        settings |= dict(aggregation=aggregation, attention_hidden_size=8, gate_hidden_size=8)
        model = adaptive_hf.FrameSamplingVideoClassifier.from_timm(
            VIDEO_BACKBONES[clip], model_args={"in_chans": 1}, **settings
        )
        with torch.no_grad():  # random BatchNorm statistics, so eval mode is not the identity at init
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        return model.eval()

    def reference(model, batch):
        x = batch["pixel_values"]
        if hf:  # the plain HF video model on evenly spaced frames
            return model.backbone(pixel_values=x[:, uniform_indices(VIDEO_FRAMES, HF_VIDEO_FRAMES)]).logits
        # The plain per-frame classifier: the stock timm model on every frame, logits averaged over time.
        return model.backbone(x.flatten(0, 1)).view(x.size(0), VIDEO_FRAMES, -1).mean(1)

    def full_fields(model, batch, out):
        frames = HF_VIDEO_FRAMES if hf else VIDEO_FRAMES
        assert out.frames_used.tolist() == [frames] * out.logits.size(0)

    def work(model, batch):
        seen: list[int] = []
        if hf:  # frames the HF video model receives
            handle = model.backbone.register_forward_pre_hook(
                lambda m, args, kwargs: seen.append(kwargs["pixel_values"].shape[:2].numel()), with_kwargs=True
            )
            undo = handle.remove
        else:  # frames the per-frame timm backbone computes features of
            original = model.backbone.forward_features
            model.backbone.forward_features = lambda x: seen.append(x.size(0)) or original(x)

            def undo():
                del model.backbone.forward_features

        try:
            with torch.no_grad():
                out = model(**batch)
        finally:
            undo()
        return [sum(seen)], [int(out.frames_used.sum())], out

    aux = {"uniform": (), "saliency": ("glance.",), "early_stop": ("gate.",)}[sampler]
    return AdaptiveCase(
        name=f"video/{clip}-{sampler}" + ("" if hf or aggregation == "mean" else f"-{aggregation}"),
        technique="video",
        builder=build,
        batch_maker=video_batch,
        modes=(Mode(sampler, mixed=False),),
        sample_fields=("frames_used", "frame_indices", "flops"),
        reference=None if aggregation == "attention" else reference,
        full_fields=full_fields,
        work=work,
        auto_class=transformers.AutoModelForVideoClassification,
        aux_off=(  # the uniform sampler trains nothing but the classifier: no auxiliary term
            {}
            if sampler == "uniform"
            else {"glance_loss_weight": 0.0, "policy_loss_weight": 0.0, "gate_loss_weight": 0.0}
            | ({} if hf else {"glance_usefulness_weight": 0.0})
        ),
        loss_is_task_loss_without_aux=sampler != "early_stop",
        aux_parameters=aux,
        remote_code=(not hf and aggregation == "mean") or (hf and sampler == "saliency"),
        token_inputs=False,
    )


# ---------------------------------------------------------------------------------------------------- registry
def _all_cases() -> list[AdaptiveCase]:
    cases = [_early_exit_text(family) for family in FAMILIES]
    cases += [_early_exit_timm(case) for case in TIMM_EXIT_CASES] + [_early_exit_hf_vit()]
    cases += [
        _halting_text(family, granularity, method)
        for family in FAMILIES
        for granularity in ("sample", "token")
        for method in ("act", "pondernet")
    ]
    cases += [_halting_timm_vit(g, m) for g in ("sample", "token") for m in ("act", "pondernet")]
    cases += [_moe(family) for family in MOE_TEXT_FAMILIES + ["vit", "timm"]] + [_moe("gpt2", causal_lm=True)]
    cases += [_reader("skim_rnn"), _reader("jump_lstm")]
    cases += [_video("efficientnet", s, a) for s in ("uniform", "saliency", "early_stop") for a in ("mean", "attention")]
    cases += [_video("resnet", "uniform")]
    cases += [_video(clip, s) for clip in HF_VIDEO_CONFIGS for s in ("uniform", "saliency")]
    return cases


CASES: list[AdaptiveCase] = _all_cases()
CASES_BY_NAME = {case.name: case for case in CASES}
