"""Shared-tester cases of the early exits (7 text families, timm models, HF ViT, DINOv2, ConvNeXt v1/v2) and halting
(text, timm ViT)."""

from __future__ import annotations

import torch
import transformers
from adaptive_case import NUM_LABELS, NUM_LAYERS, AdaptiveCase, Mode, config_values, run_counted
from text_testers import padded_batch, split_threshold, tiny_backbone_config

import adaptive_hf
from adaptive_hf.core.adapters.base import FAMILY_ADAPTERS
from adaptive_hf.early_exit.policies import exit_score


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
    """Rows each unit ran on (forward hooks), against the rows whose exit lies beyond it."""

    def work(model, batch):
        seen, out = run_counted(model, batch, units_of(model))
        exits = out.exit_layer.tolist()
        # The final exit sits after the last layer (an ALBERT's shared group runs once per layer, hook and all).
        expected = [sum(1 for e in exits if e > layer) for layer in range(model.config.exit_layers[-1])]
        return seen, [n for n in expected if n > 0], out

    return work


def _text_units(model):
    adapter = model.adapter
    if model.config.model_type.endswith("albert"):
        # ALBERT shares its layer group across depth: the group's hook fires once per layer application.
        return list(adapter.base_model.encoder.albert_layer_groups)
    return list(adapter.layer_modules())


def text_batch(pad_token_id: int = 0, max_len: int = 10, left: bool = False):
    def make(batch_size, seed, min_len):
        ids, mask = padded_batch(batch_size, max_len, seed=seed, pad_token_id=pad_token_id, min_len=min_len)
        if left:  # decoders are left-padded, as generation uses
            ids, mask = ids.flip(1), mask.flip(1)
        return {"input_ids": ids, "attention_mask": mask}

    return make


def pad_id(family: str) -> int:
    return 1 if family in ("roberta", "xlm-roberta", "mpnet") else 0


def _stock_classifier_logits(family: str, model, batch):
    """The family's stock ``...ForSequenceClassification`` with the model's weights (its head is the final exit)."""
    config = tiny_backbone_config(family)
    config.num_labels = NUM_LABELS
    stock = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    stock.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")})
    return stock(**batch).logits


def early_exit_text_case(family: str, **defaults) -> AdaptiveCase:
    """Early exits on a text family (``family``: a ``tiny_backbone_config`` key); ``defaults``: exit settings."""

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, "head_type": "linear", **defaults, **overrides}
        config = tiny_backbone_config(family)
        model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(config, **settings)
        return model.eval()

    def reference(model, batch):
        if model._stock_head_names:  # the family's own head is the final exit: the stock classifier's logits
            return _stock_classifier_logits(family, model, batch)
        base = getattr(model, model.base_model_prefix)
        output = base(**batch)
        pooling = model.config.head_pooling
        if pooling == "mean":
            weights = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (output.last_hidden_state * weights).sum(1) / weights.sum(1)
        elif pooling == "cls":
            pooled = output.last_hidden_state[:, 0]
        else:
            pooled = output.pooler_output
        return model.exit_heads[-1](pooled)

    has_pooler = FAMILY_ADAPTERS[tiny_backbone_config(family).model_type].has_pooler
    return AdaptiveCase(
        name=f"early_exit/{family}",
        technique="early_exit",
        builder=build,
        batch_maker=text_batch(pad_id(family)),
        modes=EXIT_MODES,
        sample_fields=("exit_layer",),
        reference=reference,
        full_fields=_exit_full_fields,
        work=_exit_work(_text_units),
        stopped_early=_exits_differ,
        aux_off=lambda model: {"exit_loss_weights": [0.0] * (len(model.config.exit_layers) - 1) + [1.0]},
        aux_parameters=("exit_heads.layer_1.",),
        remote_code=True,
        save_overrides={"exit_layers": [1, 3]},
        trainer_step=family in ("bert", "distilbert", "deberta-v2"),
        variants=(
            ({"head_pooling": "mean"}, None),
            ({"head_pooling": "cls"}, None),
            ({"head_pooling": "pooler"}, None if has_pooler else ValueError),
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


def _image_exit_case(name, build, units_of, reference, remote, all_modes, variants=()) -> AdaptiveCase:
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
        aux_parameters=("exit_heads.layer_",),  # every head: each non-final one is an auxiliary term
        remote_code=remote,
        token_inputs=False,
        save_overrides={"image_mean": [0.25, 0.5, 0.75], "image_std": 0.3},
        variants=variants,
    )


def early_exit_timm_case(case: str) -> AdaptiveCase:
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


def early_exit_hf_vit_case() -> AdaptiveCase:
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


TINY_HF_DINOV2 = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    mlp_ratio=2,
    image_size=32,
    patch_size=8,
    hidden_dropout_prob=0.1,
    layerscale_value=0.5,
)
# Layer scale 0.5 instead of the stock 1e-6, so every block changes the features the heads see.
TINY_HF_CONVNEXT = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], image_size=32, layer_scale_init_value=0.5)
# family -> (config class, stock image classifier, tiny config values)
HF_IMAGE_EXIT_FAMILIES = {
    "dinov2": (transformers.Dinov2Config, transformers.Dinov2ForImageClassification, TINY_HF_DINOV2),
    "convnext": (transformers.ConvNextConfig, transformers.ConvNextForImageClassification, TINY_HF_CONVNEXT),
    "convnextv2": (transformers.ConvNextV2Config, transformers.ConvNextV2ForImageClassification, TINY_HF_CONVNEXT),
}
REMOTE_HF_IMAGE_EXIT_CASES = ("dinov2", "convnextv2")


def early_exit_hf_image_case(family: str) -> AdaptiveCase:
    """Early exits on an HF image family built by the family builder (through the Auto image class)."""
    config_class, stock_class, values = HF_IMAGE_EXIT_FAMILIES[family]

    def build(**overrides):
        torch.manual_seed(0)
        config = config_class(**values, num_labels=NUM_LABELS)
        return adaptive_hf.AutoEarlyExitModelForImageClassification.from_config(config, **overrides).eval()

    def reference(model, batch):
        # The stock image classifier with the same weights (its classifier is the final exit).
        plain = stock_class(config_class(**values, num_labels=NUM_LABELS))
        plain.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")}, strict=True
        )
        return plain.eval()(**batch).logits

    return _image_exit_case(
        f"early_exit/hf-{family}",
        build,
        lambda model: list(model.adapter.layer_modules()),
        reference,
        family in REMOTE_HF_IMAGE_EXIT_CASES,
        True,
        # CNN feature maps have no class token: 'cls' pooling is refused, 'mean' averages over space.
        (({"head_pooling": "mean"}, None), ({"head_pooling": "cls"}, ValueError if "convnext" in family else None)),
    )


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


def halting_text_case(family: str, granularity: str, method: str) -> AdaptiveCase:
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
        if family.startswith("deberta"):  # large relative embeddings, so a misplaced c2p/p2c row or column shows
            torch.nn.init.normal_(model.deberta.encoder.rel_embeddings.weight, std=2.0)
        return model.eval()

    def reference(model, batch):
        hidden = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).float()
        return model.classifier((hidden * weights).sum(1) / weights.sum(1))

    return AdaptiveCase(
        name=f"halting/{family}-{granularity}-{method}",
        technique="halting",
        builder=build,
        batch_maker=text_batch(pad_id(family)),
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


def halting_timm_vit_case(granularity: str, method: str) -> AdaptiveCase:
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


# ------------------------------------------------------------------------------------------ decoder classifiers
def stock_decoder_logits(model, batch):
    """The stock ``<Arch>ForSequenceClassification`` with the model's backbone and ``score`` weights."""
    adapter = model.adapter_class
    values = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    stock = adapter.sequence_classifier_class(adapter.config_class(**values)).eval()
    own = {k: v for k, v in model.state_dict().items() if k.startswith(("model.", "score."))}
    stock.load_state_dict(own, strict=True)
    return stock(**batch).logits


def _decoder_modes(modes):
    # Left padding: a row alone keeps its padding (the shared trim cuts the right side).
    return tuple(Mode(mode.name, mode.settings, trim_padding=False, mixed=mode.mixed) for mode in modes)


def early_exit_decoder_case(family: str, left: bool = True) -> AdaptiveCase:
    from text_testers import tiny_decoder_config

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, "head_type": "linear", **overrides}
        model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
            tiny_decoder_config(family), **settings
        )
        return model.eval()

    return AdaptiveCase(
        name=f"early_exit/{family}" + ("" if left else "-right-padded"),
        technique="early_exit",
        builder=build,
        batch_maker=text_batch(0, left=left),
        modes=_decoder_modes(EXIT_MODES) if left else EXIT_MODES,
        sample_fields=("exit_layer",),
        reference=stock_decoder_logits,
        full_fields=_exit_full_fields,
        work=_exit_work(_text_units),
        stopped_early=_exits_differ,
        aux_off=lambda model: {"exit_loss_weights": [0.0] * (len(model.config.exit_layers) - 1) + [1.0]},
        aux_parameters=("exit_heads.layer_1.",),
        remote_code=family == "qwen3" and left,
        save_overrides={"exit_layers": [1, 3]},
        variants=(({"head_pooling": "last"}, None), ({"head_pooling": "mean"}, ValueError)),
    )


def halting_decoder_case(family: str, method: str, left: bool = True) -> AdaptiveCase:
    from text_testers import tiny_decoder_config

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"num_labels": NUM_LABELS, "halting": method, "halting_granularity": "sample"}
        settings |= {"halting_threshold": 0.9 if method == "act" else 0.5, **overrides}
        model = adaptive_hf.AutoHaltingModelForSequenceClassification.from_config(
            tiny_decoder_config(family), **settings
        )
        _randomize_units(model)
        return model.eval()

    return AdaptiveCase(
        name=f"halting/{family}-sample-{method}" + ("" if left else "-right-padded"),
        technique="halting",
        builder=build,
        batch_maker=text_batch(0, left=left),
        modes=(Mode("threshold", trim_padding=not left, mixed=True),),
        sample_fields=("halting_steps", "ponder_cost"),
        reference=stock_decoder_logits,
        full_fields=_halting_full_fields,
        work=_halting_work(_text_units, _text_ffn_modules),
        never_stopping=never_halting,
        stopped_early=_halted_early,
        aux_off={"ponder_cost": 0.0, "kl_weight": 0.0},
        loss_is_task_loss_without_aux=method == "act",
        aux_parameters=("halting_units.",),
        remote_code=(family, method) == ("llama", "act") and left,
        variants=(
            ({"halting_granularity": "token"}, ValueError),
            ({"head_pooling": "mean"}, ValueError),
            ({"head_type": "mlp"}, ValueError),
        ),
    )


def halting_hf_dinov2_case(granularity: str, method: str) -> AdaptiveCase:
    """Halting on an HF DINOv2 built by the halting family builder (through the Auto image class)."""
    threshold = 0.9 if method == "act" else 0.5  # PonderNet's threshold is on the probability of having halted

    def build(**overrides):
        torch.manual_seed(0)
        settings = {"halting": method, "halting_granularity": granularity, "halting_threshold": threshold}
        config = transformers.Dinov2Config(**TINY_HF_DINOV2, num_labels=NUM_LABELS)
        model = adaptive_hf.AutoHaltingModelForImageClassification.from_config(config, **{**settings, **overrides})
        _randomize_units(model)
        return model.eval()

    def reference(model, batch):
        plain = transformers.Dinov2ForImageClassification(
            transformers.Dinov2Config(**TINY_HF_DINOV2, num_labels=NUM_LABELS)
        )
        plain.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("halting_units.")}, strict=True
        )
        return plain.eval()(**batch).logits

    layers = lambda m: list(m.dinov2.encoder.layer)  # noqa: E731
    return AdaptiveCase(
        name=f"halting/hf-dinov2-{granularity}-{method}",
        technique="halting",
        builder=build,
        batch_maker=image_batch(),
        modes=(Mode("threshold", mixed=True),),
        sample_fields=("halting_steps", "ponder_cost"),
        reference=reference,
        full_fields=_halting_full_fields,
        work=_halting_work(layers, lambda m: [layer.mlp for layer in layers(m)]),
        never_stopping=never_halting,
        stopped_early=_halted_early,
        auto_class=transformers.AutoModelForImageClassification,
        aux_off={"ponder_cost": 0.0, "kl_weight": 0.0},
        loss_is_task_loss_without_aux=method == "act",
        aux_parameters=("halting_units.",),
        remote_code=(granularity, method) == ("token", "act"),
        token_inputs=False,
    )
