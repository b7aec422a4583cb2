"""Frame-sampling video classifier: a per-frame timm backbone that runs only on the frames a sampler picks.

* ``uniform``: ``frame_budget`` evenly spaced frames (the baseline; with every frame it is the plain per-frame
  classifier: backbone per frame, mean of the pooled features, the backbone's own head).
* ``saliency`` (SCSampler / AdaFrame-like): a cheap glance network scores every frame at low resolution; only the top
  ``frame_budget`` frames are gathered and sent to the backbone. In training the choice is a Gumbel top-k sample and
  the gradient reaches the scorer through a straight-through relaxed top-k (``sampler_training="relaxed_topk"``) or
  REINFORCE; the backbone still runs only on the chosen frames.
* ``early_stop`` (FrameExit-like): frames in a fixed order; after each one the running aggregate is classified and a
  gate decides whether to stop (probability >= ``exit_threshold``). Videos that stop leave the batch, so the
  backbone's next step runs on the remaining ones only. In training every step up to ``frame_budget`` runs and is
  supervised, and the gate learns "the prediction is already right".

With ``clip_classifier="hf_video"`` a transformers video classifier (VideoMAE, TimeSformer, ViViT, ...) replaces the
per-frame backbone and pooling: the sampler still picks the frames, and the HF model classifies the ``frame_budget``
chosen frames as one clip, in temporal order (its position embeddings fix that frame count).

This module assembles the model (backbone, glance network, pooling, gate, weights, costs) and dispatches ``forward``
by sampler; the per-sampler passes are in :mod:`~adaptive_hf.video.sampler_forwards`.

Costs (``flops`` in the output) come from a FLOP count of the backbone and the glance network on the meta device
at the input's frame size, so reports count the glance and the gate as well as the frames.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from ..core.adapters.timm import TimmAdapter, timm_adapter_for
from ..core.flops import frame_sampling_flops
from ..core.hub import AdaptiveHubMixin, own_loaded_tensors
from ..core.inputs import check_class_labels, check_pixel_forward_options
from ..core.peft import refuse_nested_peft_wrappers
from ..core.timm_construction import split_timm_keywords
from ..core.vision_backbones import check_pixels_fit_model, create_timm_model, load_timm_state_dict, read_state_dict
from .config import GLANCE_BUILTIN, FrameSamplingVideoConfig, validate_sampler_runtime
from .sampler_forwards import FrameSamplingVideoClassifierOutput, SamplerForwardsMixin
from .samplers import (
    AttentionPooling,
    GlanceCNN,
    GlanceNetwork,
    StopGate,
    aggregate,
    attention_flops,
    stop_gate_flops,
)
from .sources import FrameSource, resolve_frame_source

try:  # transformers v5: init functions that respect the "already loaded" flags of from_pretrained
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers
    init = nn.init


def _flop_count(module: nn.Module, fn, *inputs: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(module, *inputs)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def _backbone_costs(architecture: str, model_args_json: str, num_labels: int, shape: tuple[int, int, int]):
    """``(per-frame feature FLOPs, classifier FLOPs, feature width)`` of a timm backbone, counted on meta."""
    with torch.device("meta"):
        model = create_timm_model(architecture, num_labels, json.loads(model_args_json)).eval()
        frame = torch.empty(1, *shape)
    features = _flop_count(model, lambda m, x: m.forward_head(m.forward_features(x), pre_logits=True), frame)
    width = int(model.num_features)
    with torch.device("meta"):
        pooled = torch.empty(1, model.forward_head(model.forward_features(frame), pre_logits=True).shape[-1])
    classifier = _flop_count(model, lambda m, x: m.get_classifier()(x), pooled)
    return features, classifier, width


_HF_CONFIG_DROP = ("architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype")


def hf_video_config(config: FrameSamplingVideoConfig, num_frames: int | None = None):
    """The HF video model's config rebuilt from ``config.clip_classifier_config``, with the clip's labels.

    Args:
        config: A :class:`FrameSamplingVideoConfig` with ``clip_classifier="hf_video"``.
        num_frames: Override its ``num_frames`` (to count the cost of another clip length).
    """
    from transformers import AutoConfig

    settings = {k: v for k, v in config.clip_classifier_config.items() if k not in _HF_CONFIG_DROP}
    settings.update(num_labels=config.num_labels, id2label=dict(config.id2label), label2id=dict(config.label2id))
    settings.pop("problem_type", None)
    if num_frames is not None:
        settings["num_frames"] = num_frames
    model_type = settings.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **settings)
    except ValueError as error:
        raise ValueError(
            f"`clip_classifier_config` has model_type {model_type!r}, which transformers does not know ({error})."
        ) from error


def build_hf_video_model(hf_config) -> nn.Module:
    """``AutoModelForVideoClassification.from_config(hf_config)``, with a clear error for non-video configs."""
    from transformers import AutoModelForVideoClassification

    try:
        return AutoModelForVideoClassification.from_config(hf_config)
    except ValueError as error:
        raise ValueError(
            f"`clip_classifier_config` (model_type {hf_config.model_type!r}) is not a video classifier config; use "
            "e.g. VideoMAEConfig, TimesformerConfig or VivitConfig."
        ) from error


@functools.lru_cache(maxsize=64)
def _hf_clip_flops(config_json: str, num_frames: int, shape: tuple[int, int, int]) -> int:
    """FLOPs of the HF video classifier on one clip of ``num_frames`` frames of ``shape``, counted on meta."""
    from transformers import AutoConfig

    settings = json.loads(config_json)
    hf_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    hf_config.num_frames = num_frames
    with torch.device("meta"):
        model = build_hf_video_model(hf_config).eval()
        clip = torch.empty(1, num_frames, *shape)
    return _flop_count(model, lambda m, x: m(pixel_values=x).logits, clip)


def _glance_costs(glance: GlanceNetwork, shape: tuple[int, int, int]) -> int:
    """FLOPs of the glance network on one full-resolution frame (downsampling counted as one add per pixel)."""
    cached = glance.__dict__.setdefault("_ahf_costs", {})
    if shape not in cached:
        # Count on a meta copy of the same structure: the real module keeps its weights and statistics untouched.
        with torch.device("meta"):
            low = torch.empty(1, shape[0], glance.resolution, glance.resolution)
        import copy

        meta = copy.deepcopy(glance).to("meta").eval()
        count = _flop_count(meta, lambda m, x: (m.score(m.features(x)), m.classifier(m.features(x))), low)
        count -= _flop_count(meta, lambda m, x: m.features(x), low)  # features ran twice above
        cached[shape] = count + shape[0] * shape[1] * shape[2]
    return cached[shape]


class FrameSamplingVideoClassifier(SamplerForwardsMixin, AdaptiveHubMixin, PreTrainedModel):
    """Video classifier with a per-frame timm backbone, a frame sampler and temporal aggregation.

    The backbone is ``timm.create_model(config.architecture, pretrained=False, num_classes=config.num_labels,
    **config.model_args)`` in ``self.backbone``; its head classifies the aggregated features. The glance network, the
    attention pooling and the stop gate are new modules. Use :meth:`from_timm` to start from local timm weights such as
    the packaged EfficientNet-Lite0.

    Args:
        config: A :class:`~adaptive_hf.video.config.FrameSamplingVideoConfig`.
    """

    config_class = FrameSamplingVideoConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    auto_class_name = "AutoModelForVideoClassification"
    input_modalities = ("video",)
    accepts_loss_kwargs = False

    def __init__(self, config: FrameSamplingVideoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.uses_hf_video = config.clip_classifier == "hf_video"
        if self.uses_hf_video:
            # The HF video model is the clip classifier; it keeps its own initialisation (or loaded weights).
            self.backbone = build_hf_video_model(hf_video_config(config))
            width = None
        else:
            self.backbone = create_timm_model(config.architecture, config.num_labels, config.model_args)
            width = int(self.backbone.num_features)
        in_chans = self.in_chans
        if config.glance_architecture == GLANCE_BUILTIN:
            glance_features = GlanceCNN(in_chans, config.glance_width)
            glance_width = glance_features.num_features
        else:
            glance_args = {"in_chans": in_chans, **(config.glance_model_args or {})}
            glance_features = create_timm_model(config.glance_architecture, 0, glance_args)
            glance_width = int(glance_features.num_features)
        self.glance = GlanceNetwork(glance_features, glance_width, config.num_labels, config.glance_resolution)
        self.attention = (
            AttentionPooling(width, config.attention_hidden_size)
            if config.aggregation == "attention" and width is not None
            else None
        )
        self.gate = StopGate(width, config.num_labels, config.gate_hidden_size) if width is not None else None
        self.dropout = nn.Dropout(config.classifier_dropout)
        new_parts = [self.glance.score, self.glance.classifier, self.attention, self.gate]
        if config.glance_architecture == GLANCE_BUILTIN:
            new_parts.append(self.glance.features)
        for part in new_parts:
            for module in part.modules() if part is not None else ():
                module._ahf_new_module = True
        self.post_init()

    # ------------------------------------------------------------------------------------------------ weights
    def _init_weights(self, module: nn.Module) -> None:
        # Only our new modules are ours to initialise; the timm modules keep timm's initialisation.
        if not getattr(module, "_ahf_new_module", False):
            return
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, with aligned copies of the tensors (see ``own_loaded_tensors``)."""
        return own_loaded_tensors(super().from_pretrained(*args, **kwargs))

    @property
    def in_chans(self) -> int:
        """Input channels of the backbone (or of the HF video model)."""
        if self.config.clip_classifier == "hf_video":
            return int(self.backbone.config.num_channels)
        from timm.models._input import get_model_input_config

        return int(get_model_input_config(self.backbone)["input_size"][0])

    @classmethod
    def from_timm(
        cls,
        architecture: str,
        pretrained_weights: str | Path | dict[str, torch.Tensor] | None = None,
        num_labels: int = 2,
        model_args: dict[str, Any] | None = None,
        **settings: Any,
    ) -> FrameSamplingVideoClassifier:
        """Builds a video classifier around a timm backbone, optionally with local weights.

        Args:
            architecture: timm model name, e.g. ``"tf_efficientnet_lite0"``.
            pretrained_weights: A plain timm state dict or a path to one (``.safetensors``, or ``.pt``/``.pth`` read
                with ``torch.load(weights_only=True)``). Keys are matched by name: timm's names, the same behind a
                wrapper prefix, or the EfficientNet-PyTorch naming (the packaged EfficientNet-Lite0). A classifier of
                another width than ``num_labels`` is re-initialized (a warning says so).
            num_labels: Number of classes.
            model_args: Extra ``timm.create_model`` arguments.
            **settings: :class:`~adaptive_hf.video.config.FrameSamplingVideoConfig` fields (``sampler``,
                ``num_frames``, ``frame_budget``, ...) and ``id2label``/``label2id``; any other keyword is a
                ``timm.create_model`` argument, as for every timm-backed model.
        """
        # The rule of every timm-backed model: config fields configure, any other keyword goes to timm.create_model.
        settings, timm_kwargs = split_timm_keywords(FrameSamplingVideoConfig, settings)
        config = FrameSamplingVideoConfig(
            architecture=architecture,
            model_args={**(model_args or {}), **timm_kwargs},
            num_labels=num_labels,
            **settings,
        )
        model = cls(config)
        if pretrained_weights is not None:
            model.load_backbone_weights(pretrained_weights)
        return model

    @classmethod
    def from_hf_video(
        cls,
        video_model: str | Path | Any,
        num_labels: int | None = None,
        **settings: Any,
    ) -> FrameSamplingVideoClassifier:
        """Builds a frame-sampling classifier whose clip classifier is a transformers video model.

        The sampler picks ``frame_budget`` frames (default: the HF model's ``num_frames``) and the HF model
        classifies them as one clip, in temporal order.

        Args:
            video_model: A Hub checkpoint name or local folder of a video classifier (VideoMAE, TimeSformer,
                ViViT, ...; its weights are loaded, a classifier of another width is re-initialized), or an HF config
                (the model is randomly initialized from it).
            num_labels: Number of classes (default: the HF config's).
            **settings: :class:`~adaptive_hf.video.config.FrameSamplingVideoConfig` fields (``sampler``,
                ``num_frames``, ``frame_budget``, ``glance_resolution``, ...) and ``id2label``/``label2id``.
        """
        from transformers import AutoConfig, AutoModelForVideoClassification, PreTrainedConfig

        allowed = set(FrameSamplingVideoConfig.__dataclass_fields__) | {"id2label", "label2id"}
        unknown = sorted(set(settings) - allowed)
        if unknown or {"clip_classifier", "clip_classifier_config"} & set(settings):
            raise TypeError(
                f"from_hf_video got unsupported settings {unknown or ['clip_classifier(_config)']}; pass config "
                f"fields among {sorted(set(FrameSamplingVideoConfig.__annotations__))}."
            )
        weights = None
        if isinstance(video_model, PreTrainedConfig):
            hf_config = video_model
        elif isinstance(video_model, (str, Path)):
            hf_config = AutoConfig.from_pretrained(str(video_model))
            weights = str(video_model)
        else:
            raise TypeError(
                f"`video_model` must be a Hub name, a local folder or a transformers config; got {type(video_model)}."
            )
        num_labels = num_labels or hf_config.num_labels
        hf_frames = getattr(hf_config, "num_frames", None)
        if not isinstance(hf_frames, int):
            raise ValueError(
                f"{type(hf_config).__name__} has no integer `num_frames`; it is not a video model config."
            )
        settings.setdefault("num_frames", hf_frames)
        if settings.get("frame_budget") is None and settings["num_frames"] != hf_frames:
            settings["frame_budget"] = hf_frames
        config_dict = {k: v for k, v in hf_config.to_dict().items() if k not in _HF_CONFIG_DROP}
        for key in ("id2label", "label2id", "num_labels", "problem_type"):
            config_dict.pop(key, None)
        config = FrameSamplingVideoConfig(
            architecture=hf_config.model_type,
            clip_classifier="hf_video",
            clip_classifier_config=config_dict,
            num_labels=num_labels,
            **settings,
        )
        model = cls(config)
        if weights is not None:
            pretrained = AutoModelForVideoClassification.from_pretrained(
                weights, num_labels=num_labels, ignore_mismatched_sizes=True
            )
            missing = model.backbone.load_state_dict(pretrained.state_dict(), strict=False)
            if missing.unexpected_keys or missing.missing_keys:
                raise ValueError(f"{weights!r} does not match its own config: {missing}.")
        return model

    def load_backbone_weights(self, weights: str | Path | dict[str, torch.Tensor]) -> list[str]:
        """Loads a plain timm state dict (or a file of one) into the backbone; the new modules are untouched.

        Args:
            weights: timm-named tensors (or a naming ``match_timm_names`` accepts, matched by name), or a file.

        Returns:
            The backbone tensors left as initialized (its classifier when the width differs).
        """
        if self.uses_hf_video:
            raise ValueError("load_backbone_weights loads timm weights; an HF video model loads in from_hf_video.")
        return load_timm_state_dict(
            self.backbone, read_state_dict(weights), self.config.architecture, self.config.num_labels
        )

    # ------------------------------------------------------------------------------------------------- pieces
    @property
    def frame_adapter(self) -> TimmAdapter | None:
        """The timm adapter over the frame backbone (the one every timm-backed technique uses), or ``None`` for a
        timm family without one (its own ``forward_features`` then runs)."""
        cached = self.__dict__.get("_frame_adapter")
        if cached is None or cached[0] is not self.backbone:
            try:
                adapter_class = timm_adapter_for(self.backbone)
            except ValueError:
                adapter = None
            else:
                adapter = adapter_class(self.backbone, "block" if adapter_class.is_transformer else "stage")
            cached = self.__dict__["_frame_adapter"] = (self.backbone, adapter)
        return cached[1]

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(n, dim)`` of ``(n, C, H, W)`` frames (the expensive part)."""
        adapter = self.frame_adapter
        if adapter is None:
            return self.backbone.forward_head(self.backbone.forward_features(frames), pre_logits=True)
        return adapter.features(frames)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The backbone's own classifier on aggregated features."""
        return self.backbone.get_classifier()(self.dropout(pooled))

    def _aggregate(self, features, weights=None, mask=None) -> torch.Tensor:
        logits = self.attention.frame_logits(features) if self.attention is not None else None
        return aggregate(features, logits, weights, mask)

    def _glance(self, source: FrameSource) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, T)`` glance scores (``-inf`` for frames the source did not glance at) and the glance frame
        logits ``(batch, g, L)`` of the ``g`` frames it did."""
        indices, pixels = source.glance_frames()
        indices, pixels = indices.to(self.device), pixels.to(self.device)
        batch, seen = indices.shape
        scores, logits = self.glance(pixels.flatten(0, 1))
        scores, logits = scores.view(batch, seen), logits.view(batch, seen, -1)
        if seen == source.num_frames and bool((indices == torch.arange(seen, device=indices.device)).all()):
            return scores, logits
        full = scores.new_full((batch, source.num_frames), float("-inf"))
        return full.scatter(1, indices, scores), logits

    def frame_costs(self, frame_shape: tuple[int, int, int]) -> dict[str, int]:
        """Theoretical FLOPs of the parts, for one frame of ``(C, H, W)``.

        Args:
            frame_shape: ``(channels, height, width)`` of the input frames.

        Returns:
            ``frame`` (backbone features + aggregation share), ``classifier``, ``glance`` (downsampling, glance
            network and its heads), ``gate``.
        """
        config = self.config
        shape = tuple(int(s) for s in frame_shape)
        if self.uses_hf_video:
            # The HF model classifies the clip as a whole; its cost is shared evenly over the clip's frames.
            clip = _hf_clip_flops(self._hf_config_json(), config.budget, shape)
            return {
                "frame": clip / config.budget,
                "classifier": 0,
                "glance": _glance_costs(self.glance, shape),
                "gate": 0,
            }
        features, classifier, width = _backbone_costs(
            config.architecture, json.dumps(config.model_args, sort_keys=True), config.num_labels, shape
        )
        share = attention_flops(width, config.attention_hidden_size) if self.attention is not None else width
        return {
            "frame": features + share,
            "classifier": classifier,
            "glance": _glance_costs(self.glance, shape),
            "gate": stop_gate_flops(width, config.num_labels, config.gate_hidden_size),
        }

    def full_flops(self, frame_shape: tuple[int, int, int]) -> int:
        """FLOPs of the full-compute reference (every frame, no glance) for one video.

        Args:
            frame_shape: ``(channels, height, width)`` of the input frames.
        """
        if self.uses_hf_video:
            # The same HF video model run on every frame of the clip (its config with num_frames = T).
            shape = tuple(int(s) for s in frame_shape)
            return _hf_clip_flops(self._hf_config_json(), self.config.num_frames, shape)
        costs = self.frame_costs(frame_shape)
        return frame_sampling_flops(self.config.num_frames, costs["frame"], classifier_flops=costs["classifier"])

    def _hf_config_json(self) -> str:
        settings = self.backbone.config.to_dict()
        for key in ("id2label", "label2id", *_HF_CONFIG_DROP):
            settings.pop(key, None)
        # to_dict() keeps the label count only through id2label: without it the counted model would have 2 labels.
        settings["num_labels"] = self.backbone.config.num_labels
        return json.dumps(settings, sort_keys=True, default=str)

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        frame_source: FrameSource | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> FrameSamplingVideoClassifierOutput | tuple:
        """Classifies a batch of clips, running the backbone only on the sampled frames.

        Args:
            pixel_values: ``(batch, num_frames, channels, height, width)`` normalized float frames.
            labels: ``(batch,)`` class ids; adds ``loss``.
            return_dict: Return a tuple when ``False``.
            frame_source: Instead of ``pixel_values`` (inference only): a
                :class:`~adaptive_hf.video.sources.FrameSource` the sampler asks for the frames it needs, e.g. the
                ``VideoFileSource`` of :class:`~adaptive_hf.video.files.VideoFileCollator`, which decodes only
                those frames; ``frames_decoded`` in the output counts what it decoded.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Text inputs given as ``None`` (peft's ``SEQ_CLS`` wrapper passes them) are accepted;
                any other keyword is refused by name.
        """
        reason = "clips run the backbone on different frames, so no per-layer tensor covers the whole batch"
        check_pixel_forward_options(
            type(self).__name__,
            output_attentions,
            output_hidden_states,
            unsupported,
            reason=reason,
            pixel_shape="(batch, num_frames, channels, height, width)",
        )
        refuse_nested_peft_wrappers(self)
        config = self.config
        validate_sampler_runtime(config)
        if self.training and labels is not None:
            config.validate_video()  # the training fields (loss weights, temperature) may have changed since init
        source = self._frame_source(pixel_values, frame_source)
        batch = source.num_videos
        if pixel_values is not None:
            check_pixels_fit_model(pixel_values, self.backbone)
        if labels is not None:
            check_class_labels(labels, batch, config.num_labels)
        budget = config.budget
        if config.sampler == "uniform":
            output = self._forward_uniform(source, labels, budget)
        elif config.sampler == "saliency":
            output = self._forward_saliency(source, labels, budget)
        elif self.training:
            output = self._train_early_stop(source.pixel_values, labels, budget)
        else:
            output = self._eval_early_stop(source, labels, budget)
        output.frames_decoded = source.frames_decoded()
        if return_dict is False:
            return output.to_tuple()
        return output

    def _frame_source(self, pixel_values, frame_source) -> FrameSource:
        """The checked source of this forward: ``frame_source``, or the ``pixel_values`` tensor as one."""
        return resolve_frame_source(pixel_values, frame_source, self.config.num_frames, self.in_chans, self.training)

    # ------------------------------------------------------------------------------------------------- card
    def pipeline_tag(self) -> str:
        return "video-classification"

    def model_card_details(self) -> tuple[list[str], str]:
        config = self.config
        library = "transformers" if self.uses_hf_video else "timm"
        tags = ["adaptive-hf", "frame-sampling", "video-classification", library, config.architecture]
        body = (
            f"Frame sampling: sampler `{config.sampler}`, {config.num_frames} frames per clip, frame budget "
            f"{config.budget}, aggregation `{config.aggregation}`, "
            + (
                f"HF video clip classifier `{config.architecture}`"
                if self.uses_hf_video
                else f"per-frame backbone `{config.architecture}`"
            )
            + (
                f", exit threshold {config.exit_threshold}, order `{config.frame_order}`"
                if config.sampler == "early_stop"
                else ""
            )
            + ".\n"
        )
        return tags, body
