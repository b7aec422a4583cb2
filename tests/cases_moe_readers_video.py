"""Shared-tester cases of switch MoE (text families, HF ViT, timm ViT, a causal LM), the RNN readers and video."""

from __future__ import annotations

import timm
import torch
import transformers
from adaptive_case import NUM_LABELS, AdaptiveCase, Mode, run_counted
from cases_exits_halting import image_batch, pad_id, text_batch
from text_testers import TINY_TIMM_VIT_ARGS, tiny_dense_config
from torch import nn

import adaptive_hf

# -------------------------------------------------------------------------------------------------- switch MoE
MOE_TEXT_FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "gpt2", "llama"]
MOE_TEXT_FAMILIES += ["qwen2", "qwen3"]
MOE_TIMM_ARGS = TINY_TIMM_VIT_ARGS
DECODERS = ("gpt2", "llama", "qwen2", "qwen3")


def moe_dense_config(family: str, num_labels: int = NUM_LABELS):
    """A tiny random dense config of ``family`` (a text family or ``"vit"``)."""
    config = tiny_dense_config(family)
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
    if family == "dinov2":
        return transformers.Dinov2ForImageClassification(config).eval()
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


def moe_case(family: str, causal_lm: bool = False) -> AdaptiveCase:
    def build(**overrides):
        # Built with capacity; the modes (and full compute) change it at runtime, as a user would.
        settings = {"num_experts": 4, "moe_layers": [2, 3], "capacity_factor": 1.0}
        model = adaptive_hf.upcycle(moe_dense_model(family, causal_lm), **{**settings, **overrides}, seed=1)
        return model.eval()

    def reference(model, batch):
        dense = moe_dense_model(family, causal_lm)
        return dense(batch["pixel_values"]) if family == "timm" else dense(**batch).logits

    image = family in ("vit", "timm", "dinov2")
    decoder = family in DECODERS
    name = f"switch_moe/{family}" + ("-causal-lm" if causal_lm else "")
    return AdaptiveCase(
        name=name,
        technique="switch_moe",
        builder=build,
        batch_maker=image_batch(16) if image else text_batch(pad_id(family), max_len=9, left=decoder),
        modes=tuple(
            Mode(m.name, m.settings, trim_padding=m.trim_padding and not decoder, mixed=m.mixed) for m in MOE_MODES
        ),  # fmt: skip
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
        remote_code=family in ("bert", "timm", "dinov2") or causal_lm,
        token_inputs=not image,
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
    if batch_size > 4:
        mask[3] = 0  # an empty row (all padding): a reader reads nothing of it
    return {"input_ids": ids * mask, "attention_mask": mask}


def reader_case(kind: str) -> AdaptiveCase:
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
            config = adaptive_hf.JumpLstmConfig(
                **{**base, "read_tokens": 2, "max_jump": 3, "max_jumps": 3, **overrides}
            )
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
            else {
                "policy_loss_coef": 0.0,
                "baseline_loss_coef": 0.0,
                "entropy_coef": 0.0,
                "full_reading_loss_coef": 0.0,
            }
        ),
        aux_parameters=("skim_gate." if skim else "jump_policy.",),
        stopped_early=lambda out, batch: int((out.tokens_skimmed if skim else out.tokens_jumped).sum()) > 0,
        remote_code=True,
        vocab_size=READER_VOCAB,
        card_words=(kind.replace("_", "-"),),
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


def video_case(clip: str, sampler: str, aggregation: str = "mean") -> AdaptiveCase:
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
        expected = uniform_indices(VIDEO_FRAMES, frames).tolist()
        assert out.frame_indices.tolist() == [expected] * out.logits.size(0)

    def work(model, batch):
        seen: list[int] = []
        if hf:  # frames the HF video model receives
            handle = model.backbone.register_forward_pre_hook(
                lambda m, args, kwargs: seen.append(kwargs["pixel_values"].shape[:2].numel()), with_kwargs=True
            )
            undo = handle.remove
        else:  # frames that reach the per-frame backbone's first unit (it runs through its timm adapter)
            handle = model.frame_adapter.units[0].register_forward_pre_hook(
                lambda module, args: seen.append(args[0].size(0))
            )
            undo = handle.remove

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
        card_words=("video-classification",),
    )
