"""adaptive_hf: dynamic neural networks (early exits, halting, MoE, skim readers, frame samplers) for 🤗 and timm.

Importing the package registers every adaptive config and model with the transformers Auto classes.
"""

from .calibration import CalibrationReport, calibrate
from .core.adapters.base import BackboneAdapter, FfnSlot
from .core.adapters.text import TextEncoderAdapter
from .core.candidates import CandidateOutcomes
from .core.peft import check_peft_config, ia3_config, lora_config, peft_modules_to_save
from .core.registry import register_builtin_families, register_family, register_text_encoder
from .core.technique import (
    TECHNIQUES,
    Knob,
    TechniqueSpec,
    compute_cost,
    full_compute,
    register_technique,
    technique_of,
)
from .data import load_text_classification, packaged_minilm_path
from .early_exit import spec as _early_exit_spec  # noqa: F401  (each technique registers its spec on import)
from .early_exit.auto import AutoEarlyExitModelForImageClassification, AutoEarlyExitModelForSequenceClassification
from .early_exit.config import (
    EARLY_EXIT_CONFIGS,
    EarlyExitAlbertConfig,
    EarlyExitBertConfig,
    EarlyExitDebertaV2Config,
    EarlyExitDistilBertConfig,
    EarlyExitElectraConfig,
    EarlyExitMPNetConfig,
    EarlyExitRobertaConfig,
    EarlyExitXLMRobertaConfig,
)
from .early_exit.hf_vision_modeling import (
    EarlyExitConvNextForImageClassification,
    EarlyExitConvNextV2ForImageClassification,
    EarlyExitDinov2ForImageClassification,
    EarlyExitViTForImageClassification,
)
from .early_exit.modeling import (
    EARLY_EXIT_MODELS,
    EarlyExitAlbertForSequenceClassification,
    EarlyExitBertForSequenceClassification,
    EarlyExitDebertaV2ForSequenceClassification,
    EarlyExitDistilBertForSequenceClassification,
    EarlyExitElectraForSequenceClassification,
    EarlyExitMPNetForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    EarlyExitXLMRobertaForSequenceClassification,
)
from .early_exit.vision_config import (
    EarlyExitConvNextConfig,
    EarlyExitConvNextV2Config,
    EarlyExitDinov2Config,
    EarlyExitTimmConfig,
    EarlyExitViTConfig,
)
from .early_exit.vision_modeling import EarlyExitTimmForImageClassification, register_timm_early_exit
from .early_exit.vision_registration import register_vision_early_exit
from .halting import spec as _halting_spec  # noqa: F401
from .halting.auto import AutoHaltingModelForImageClassification, AutoHaltingModelForSequenceClassification
from .halting.config import HALTING_CONFIGS
from .halting.hf_vision import HaltingDinov2Config, HaltingDinov2ForImageClassification
from .halting.modeling import HALTING_MODELS
from .halting.training import HaltingCurriculumCallback
from .halting.vision import HaltingTimmConfig, HaltingTimmForImageClassification
from .moe import spec as _moe_spec  # noqa: F401
from .moe.auto import register_moe_family
from .moe.callbacks import ExpertLoadCallback
from .moe.config import SWITCH_MOE_CONFIGS, SwitchMoEConfig
from .moe.layer import SwitchMoEFeedForward
from .moe.modeling import SWITCH_MOE_MODELS
from .moe.timm_config import SwitchMoETimmConfig
from .moe.timm_modeling import SwitchMoETimmForImageClassification
from .moe.upcycle import upcycle
from .readers import (
    JumpLstmConfig,
    JumpLstmForSequenceClassification,
    SkimRnnConfig,
    SkimRnnForSequenceClassification,
    register_readers,
)
from .readers import spec as _readers_spec  # noqa: F401
from .readers.training import FullReadingWarmupCallback
from .training import ExitStatisticsCallback, TwoStageExitTrainingCallback
from .video import (
    FrameSamplingVideoClassifier,
    FrameSamplingVideoConfig,
    VideoCollator,
    VideoFileCollator,
    load_moving_fashion_mnist,
    load_video_folder,
    register_video,
)
from .video import spec as _video_spec  # noqa: F401

# Each technique's auto module registered its family builder on import; now every built-in family gets them all.
register_builtin_families()
register_vision_early_exit()
register_readers()
register_video()

# EarlyExit<Arch>Config / EarlyExit<Arch>ForSequenceClassification of the built-in families not imported above.
_EARLY_EXIT_CLASSES = {cls.__name__: cls for cls in (*EARLY_EXIT_CONFIGS.values(), *EARLY_EXIT_MODELS.values())}
globals().update(_EARLY_EXIT_CLASSES)

# Halting<Arch>Config / Halting<Arch>ForSequenceClassification, built per family.
_HALTING_CLASSES = {cls.__name__: cls for cls in (*HALTING_CONFIGS.values(), *HALTING_MODELS.values())}
globals().update(_HALTING_CLASSES)

# SwitchMoE<Arch>Config and SwitchMoE<StockClass> (e.g. SwitchMoEBertForSequenceClassification): built per family.
_SWITCH_MOE_CLASSES = {cls.__name__: cls for cls in (*SWITCH_MOE_CONFIGS.values(), *SWITCH_MOE_MODELS.values())}
globals().update(_SWITCH_MOE_CLASSES)

__version__ = "0.1.0"

__all__ = [
    "AutoEarlyExitModelForSequenceClassification",
    "CalibrationReport",
    "ExitStatisticsCallback",
    "TwoStageExitTrainingCallback",
    "calibrate",
    "CandidateOutcomes",
    "compute_cost",
    "full_compute",
    "Knob",
    "register_technique",
    "TECHNIQUES",
    "TechniqueSpec",
    "technique_of",
    "lora_config",
    "ia3_config",
    "check_peft_config",
    "peft_modules_to_save",
    "load_text_classification",
    "packaged_minilm_path",
    "EarlyExitAlbertConfig",
    "EarlyExitAlbertForSequenceClassification",
    "EarlyExitBertConfig",
    "EarlyExitBertForSequenceClassification",
    "EarlyExitDistilBertConfig",
    "EarlyExitDistilBertForSequenceClassification",
    "EarlyExitElectraConfig",
    "EarlyExitElectraForSequenceClassification",
    "EarlyExitMPNetConfig",
    "EarlyExitMPNetForSequenceClassification",
    "EarlyExitDebertaV2Config",
    "EarlyExitDebertaV2ForSequenceClassification",
    "EarlyExitRobertaConfig",
    "EarlyExitRobertaForSequenceClassification",
    "EarlyExitXLMRobertaConfig",
    "EarlyExitXLMRobertaForSequenceClassification",
    "FullReadingWarmupCallback",
    "JumpLstmConfig",
    "JumpLstmForSequenceClassification",
    "SkimRnnConfig",
    "SkimRnnForSequenceClassification",
    "BackboneAdapter",
    "FfnSlot",
    "TextEncoderAdapter",
    "register_family",
    "register_text_encoder",
    "ExpertLoadCallback",
    "SwitchMoEConfig",
    "SwitchMoEFeedForward",
    "SwitchMoETimmConfig",
    "SwitchMoETimmForImageClassification",
    "register_moe_family",
    "upcycle",
]
__all__ += sorted(_SWITCH_MOE_CLASSES)
__all__ += sorted(set(_EARLY_EXIT_CLASSES) - set(__all__))
__all__ += [
    "AutoHaltingModelForSequenceClassification",
    "HaltingCurriculumCallback",
    "HaltingTimmConfig",
    "HaltingTimmForImageClassification",
    *sorted(_HALTING_CLASSES),
]
__all__ += [
    "EarlyExitTimmConfig",
    "EarlyExitTimmForImageClassification",
    "EarlyExitViTConfig",
    "EarlyExitViTForImageClassification",
    "EarlyExitDinov2Config",
    "EarlyExitDinov2ForImageClassification",
    "EarlyExitConvNextConfig",
    "EarlyExitConvNextForImageClassification",
    "EarlyExitConvNextV2Config",
    "EarlyExitConvNextV2ForImageClassification",
    "AutoEarlyExitModelForImageClassification",
    "AutoHaltingModelForImageClassification",
    "HaltingDinov2Config",
    "HaltingDinov2ForImageClassification",
    "register_timm_early_exit",
]
__all__ += ["FrameSamplingVideoClassifier", "FrameSamplingVideoConfig", "VideoCollator", "load_moving_fashion_mnist"]
__all__ += ["VideoFileCollator", "load_video_folder"]
