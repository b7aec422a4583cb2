"""Config of the frame-sampling video classifier: a per-frame timm backbone, a frame sampler and an aggregator.

The runtime knobs (``sampler``, ``frame_budget``, ``exit_threshold``, ``frame_order``, ``min_frames``) are read from
the config at every forward and validated there too, so a user can change them after loading.
"""

from __future__ import annotations

from typing import Any

from ..core.configuration import FrozenStructureMixin, check_choice, check_number, check_structure_unchanged
from ..core.vision_backbones import TimmClassifierConfig, check_timm_model_args

SAMPLERS = ("uniform", "saliency", "early_stop")
AGGREGATIONS = ("mean", "attention")
FRAME_ORDERS = ("coverage", "glance", "sequential")
SAMPLER_TRAININGS = ("relaxed_topk", "reinforce")
GLANCE_BUILTIN = "glance_cnn"
CLIP_CLASSIFIERS = ("frame_backbone", "hf_video")


def validate_sampler_runtime(config) -> None:
    """Checks the knobs a user may change after loading; called at creation and at every forward.

    Args:
        config: A :class:`FrameSamplingVideoConfig`.
    """
    check_structure_unchanged(config)
    check_choice("sampler", config.sampler, SAMPLERS)
    check_number("num_frames", config.num_frames, 1, None, integer=True)
    if config.frame_budget is not None:
        check_number("frame_budget", config.frame_budget, 1, config.num_frames, integer=True)
    check_number("exit_threshold", config.exit_threshold, 0.0, 1.0)
    check_choice("frame_order", config.frame_order, FRAME_ORDERS)
    check_number("min_frames", config.min_frames, 1, config.num_frames, integer=True)
    check_number("frames_per_step", config.frames_per_step, 1, config.num_frames, integer=True)
    if getattr(config, "clip_classifier", "frame_backbone") == "hf_video":
        if config.sampler == "early_stop":
            raise ValueError(
                "`sampler='early_stop'` needs `clip_classifier='frame_backbone'`: an HF video model classifies a "
                "fixed number of frames at once, so it cannot stop part-way. Use 'uniform' or 'saliency'."
            )
        hf_frames = (config.clip_classifier_config or {}).get("num_frames")
        if hf_frames is not None and config.budget != hf_frames:
            raise ValueError(
                f"`frame_budget` ({config.budget}) must equal the HF video model's `num_frames` ({hf_frames}) with "
                "`clip_classifier='hf_video'`: its position embeddings are sized for that many frames, and the "
                "sampler passes it exactly `frame_budget` frames in temporal order."
            )


class FrameSamplingVideoConfig(FrozenStructureMixin, TimmClassifierConfig):
    """Config of :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.

    The expensive per-frame backbone is ``timm.create_model(architecture, pretrained=False, num_classes=num_labels,
    **model_args)``; its pooled features are aggregated over the chosen frames and its own classifier head classifies
    the aggregate, so a timm checkpoint fine-tuned on single frames loads unchanged.

    Args:
        architecture: timm model name of the per-frame backbone, e.g. ``"tf_efficientnet_lite0"``.
        model_args: Extra ``timm.create_model`` arguments (``in_chans``, ``img_size``, widths, ...); see
            :class:`~adaptive_hf.core.vision_backbones.TimmClassifierConfig`.
        num_frames: Frames per clip (T) the model expects.
        sampler: ``"uniform"`` (``frame_budget`` evenly spaced frames), ``"saliency"`` (a glance network scores
            every frame; the top ``frame_budget`` go to the backbone) or ``"early_stop"`` (frames in
            ``frame_order``; a gate on the running aggregate stops when its probability >= ``exit_threshold``).
        frame_budget: Frames the backbone sees per clip (``early_stop``: at most); ``None`` = ``num_frames``.
        exit_threshold: ``early_stop`` stops once the gate's stop probability reaches this value, in [0, 1].
        frame_order: ``early_stop`` order: ``"coverage"`` (0, T/2, T/4, 3T/4, ...: the clip is covered coarse to
            fine), ``"glance"`` (by glance score) or ``"sequential"``.
        min_frames: ``early_stop`` never stops before this many frames.
        frames_per_step: ``early_stop`` runs the backbone on this many frames of each remaining video per step
            (and may stop only after each such chunk): fewer, larger backbone calls cut the per-step overhead.
        aggregation: ``"mean"`` of the frames' pooled features, or ``"attention"`` pooling (a learned score per
            frame, softmax over the chosen frames).
        attention_hidden_size: Hidden width of the attention scorer.
        glance_architecture: ``"glance_cnn"`` (a small built-in CNN) or a timm model name for the glance network.
        glance_model_args: Extra ``timm.create_model`` arguments of a timm glance network.
        glance_resolution: Side the frames are downsampled to (area averaging) before the glance network.
        glance_width: Channels of the first layer of the built-in glance CNN (doubled at each of its 3 layers).
        glance_loss_weight: Weight of the glance network's own frame classification loss (clip label on every
            frame), which teaches its features what the labelled items look like.
        glance_usefulness_weight: SCSampler-style supervision of the glance scores (0 disables it): in training
            the backbone also classifies every frame on its own (without gradient), and ``sigmoid(score)`` is
            trained (binary cross-entropy) to predict that frame's probability of the true class, i.e. how useful
            the frame is to the classifier. Needs ``clip_classifier='frame_backbone'``.
        sampler_training: How the gradient reaches the saliency scorer in training: ``"relaxed_topk"`` (Gumbel
            top-k with a straight-through relaxation: the backbone still runs only on the chosen frames) or
            ``"reinforce"`` (score-function gradient of the Plackett-Luce choice with a batch-mean baseline).
        topk_temperature: Temperature (> 0) of the relaxed top-k.
        policy_loss_weight: Weight of the REINFORCE term.
        gate_loss_weight: Weight of the ``early_stop`` gate's loss (binary cross-entropy against "the prediction
            after this frame is correct").
        gate_hidden_size: Hidden width of the gate.
        clip_classifier: ``"frame_backbone"`` (the timm per-frame backbone, pooled over the chosen frames) or
            ``"hf_video"`` (a transformers video classifier such as VideoMAE, TimeSformer or ViViT classifies the
            chosen frames as one clip, in temporal order; ``architecture`` and ``model_args`` are then unused).
        clip_classifier_config: With ``"hf_video"``: the HF video model's config as a dict (``config.to_dict()``,
            with its ``model_type``); the model is rebuilt from it. Its ``num_frames`` must equal ``frame_budget``.
        classifier_dropout: Dropout on the aggregated features before the classifier, in [0, 1).
        initializer_range: Std of the normal init of the new linear layers.
        **kwargs: ``PreTrainedConfig`` fields (``num_labels``, ``id2label``, ...).
    """

    model_type = "frame_sampling_video"

    architecture: str = "resnet18"
    num_frames: int = 16
    sampler: str = "uniform"
    frame_budget: int | None = None
    exit_threshold: float = 0.9
    frame_order: str = "coverage"
    min_frames: int = 1
    frames_per_step: int = 1
    aggregation: str = "mean"
    attention_hidden_size: int = 64
    glance_architecture: str = GLANCE_BUILTIN
    glance_model_args: dict | None = None
    glance_resolution: int = 32
    glance_width: int = 16
    glance_loss_weight: float = 0.5
    glance_usefulness_weight: float = 0.0
    sampler_training: str = "relaxed_topk"
    topk_temperature: float = 0.5
    policy_loss_weight: float = 1.0
    gate_loss_weight: float = 1.0
    gate_hidden_size: int = 64
    clip_classifier: str = "frame_backbone"
    clip_classifier_config: dict | None = None
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        self.validate_video()

    @property
    def budget(self) -> int:
        """``frame_budget``, or ``num_frames`` when it is ``None``."""
        return self.num_frames if self.frame_budget is None else self.frame_budget

    @property
    def uses_glance(self) -> bool:
        """Whether the current sampler runs the glance network."""
        return self.sampler == "saliency" or (self.sampler == "early_stop" and self.frame_order == "glance")

    def validate_video(self) -> None:
        """Validates every field; raises ``ValueError``/``TypeError`` naming the field and allowed values."""
        if not isinstance(self.architecture, str) or not self.architecture:
            raise TypeError(f"`architecture` must be a timm model name (str); got {self.architecture!r}.")
        for name in ("model_args", "glance_model_args"):
            if getattr(self, name) is not None:
                check_timm_model_args(name, getattr(self, name))
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_number("attention_hidden_size", self.attention_hidden_size, 1, None, integer=True)
        if not isinstance(self.glance_architecture, str) or not self.glance_architecture:
            raise TypeError(
                f"`glance_architecture` must be {GLANCE_BUILTIN!r} or a timm model name; got "
                f"{self.glance_architecture!r}."
            )
        if self.glance_architecture == GLANCE_BUILTIN and self.glance_model_args:
            raise ValueError(
                f"`glance_model_args` applies to a timm glance network; the built-in {GLANCE_BUILTIN!r} takes "
                "`glance_width` and `glance_resolution`."
            )
        check_number("glance_resolution", self.glance_resolution, 8, None, integer=True)
        check_number("glance_width", self.glance_width, 1, None, integer=True)
        check_number("glance_loss_weight", self.glance_loss_weight, 0.0, None)
        check_number("glance_usefulness_weight", self.glance_usefulness_weight, 0.0, None)
        check_choice("clip_classifier", self.clip_classifier, CLIP_CLASSIFIERS)
        if self.clip_classifier == "hf_video":
            hf = self.clip_classifier_config
            if not isinstance(hf, dict) or not isinstance(hf.get("model_type"), str):
                raise TypeError(
                    "`clip_classifier_config` must be the HF video model's config as a dict with its `model_type` "
                    f"(e.g. VideoMAEConfig(...).to_dict()) when `clip_classifier='hf_video'`; got {hf!r}."
                )
            if self.aggregation != "mean":
                raise ValueError(
                    "`aggregation` applies to the per-frame backbone; with `clip_classifier='hf_video'` the HF video "
                    f"model pools over time itself, so leave it at 'mean' (got {self.aggregation!r})."
                )
            if self.glance_usefulness_weight > 0:
                raise ValueError(
                    "`glance_usefulness_weight` needs per-frame predictions, i.e. `clip_classifier='frame_backbone'`;"
                    " with 'hf_video' train the glance scores with `sampler_training` ('relaxed_topk', 'reinforce')."
                )
        elif self.clip_classifier_config is not None:
            raise ValueError(
                "`clip_classifier_config` is the HF video model's config; it applies only with "
                f"`clip_classifier='hf_video'` (got clip_classifier={self.clip_classifier!r})."
            )
        check_choice("sampler_training", self.sampler_training, SAMPLER_TRAININGS)
        check_number("topk_temperature", self.topk_temperature, 0.0, None, low_inclusive=False)
        check_number("policy_loss_weight", self.policy_loss_weight, 0.0, None)
        check_number("gate_loss_weight", self.gate_loss_weight, 0.0, None)
        check_number("gate_hidden_size", self.gate_hidden_size, 1, None, integer=True)
        check_number("classifier_dropout", self.classifier_dropout, 0.0, 1.0, high_inclusive=False)
        check_number("initializer_range", self.initializer_range, 0.0, None, low_inclusive=False)
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be >= 2 for the video classifier; got {self.num_labels}.")
        if self.problem_type not in (None, "single_label_classification"):
            raise ValueError(
                f"`problem_type` must be None or 'single_label_classification'; got {self.problem_type!r}."
            )
        validate_sampler_runtime(self)
