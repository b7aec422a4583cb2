"""Skim and jump RNN text readers (Skim-RNN, LSTM-Jump) as Hugging Face sequence classifiers."""

from .config import JumpLstmConfig, SkimRnnConfig
from .jump_lstm import JumpLstmForSequenceClassification
from .modeling import ReaderSequenceClassifierOutput, lstm_cell_flops
from .skim_rnn import SkimRnnForSequenceClassification

READER_MODELS = {
    "skim_rnn": (SkimRnnConfig, SkimRnnForSequenceClassification),
    "jump_lstm": (JumpLstmConfig, JumpLstmForSequenceClassification),
}


def register_readers() -> None:
    """Registers the reader configs and models with ``AutoConfig`` and ``AutoModelForSequenceClassification``."""
    from transformers import AutoModelForSequenceClassification

    from ..core.registry import register

    for key, (config_class, model_class) in READER_MODELS.items():
        register("readers", key, config_class, model_class, AutoModelForSequenceClassification)


__all__ = [
    "JumpLstmConfig",
    "JumpLstmForSequenceClassification",
    "ReaderSequenceClassifierOutput",
    "SkimRnnConfig",
    "SkimRnnForSequenceClassification",
    "lstm_cell_flops",
    "register_readers",
]
