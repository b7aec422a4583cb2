"""adaptive_hf: dynamic neural networks (early exits, halting, MoE, skim readers, frame samplers) for 🤗 and timm.

Importing the package registers every adaptive config and model with the transformers Auto classes.
"""

from .core.backbones import TextEncoderAdapter
from .core.registry import register_builtin, register_text_encoder
from .early_exit.auto import AutoEarlyExitModelForSequenceClassification
from .early_exit.calibration import CalibrationReport, calibrate
from .early_exit.config import (
    EarlyExitAlbertConfig,
    EarlyExitBertConfig,
    EarlyExitDistilBertConfig,
    EarlyExitElectraConfig,
    EarlyExitMPNetConfig,
    EarlyExitRobertaConfig,
    EarlyExitXLMRobertaConfig,
)
from .early_exit.modeling import (
    EarlyExitAlbertForSequenceClassification,
    EarlyExitBertForSequenceClassification,
    EarlyExitDistilBertForSequenceClassification,
    EarlyExitElectraForSequenceClassification,
    EarlyExitMPNetForSequenceClassification,
    EarlyExitRobertaForSequenceClassification,
    EarlyExitXLMRobertaForSequenceClassification,
)
from .readers import (
    JumpLstmConfig,
    JumpLstmForSequenceClassification,
    SkimRnnConfig,
    SkimRnnForSequenceClassification,
    register_readers,
)
from .training import ExitStatisticsCallback, TwoStageExitTrainingCallback

register_builtin()
register_readers()

__version__ = "0.1.0"

__all__ = [
    "AutoEarlyExitModelForSequenceClassification",
    "CalibrationReport",
    "ExitStatisticsCallback",
    "TwoStageExitTrainingCallback",
    "calibrate",
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
    "EarlyExitRobertaConfig",
    "EarlyExitRobertaForSequenceClassification",
    "EarlyExitXLMRobertaConfig",
    "EarlyExitXLMRobertaForSequenceClassification",
    "JumpLstmConfig",
    "JumpLstmForSequenceClassification",
    "SkimRnnConfig",
    "SkimRnnForSequenceClassification",
    "TextEncoderAdapter",
    "register_text_encoder",
]
