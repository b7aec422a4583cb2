"""The RNN readers' spec (Skim-RNN and LSTM-Jump), registered once."""

from __future__ import annotations

from ..core.technique import Knob, TechniqueSpec, register_technique
from .commands import cli_bench, cli_evaluate
from .config import SKIM_THRESHOLDS, STOP_THRESHOLDS


def _is_skim(config) -> bool:
    return config.model_type == "skim_rnn"


def _is_jump(config) -> bool:
    return config.model_type == "jump_lstm"


def reader_cost(model, outputs, batch):
    """Per-sample FLOPs spent (tokens read, skimmed, decisions taken) and for full reading; see
    ``model.theoretical_flops``.

    Args:
        model: A Skim-RNN or LSTM-Jump classifier.
        outputs: Its output (token counts per sample).
        batch: The inputs (unused: the output records the token counts).
    """
    return model.theoretical_flops(outputs)


SPEC = register_technique(
    TechniqueSpec(
        name="readers",
        model_types=("skim_rnn", "jump_lstm"),
        # Skim-RNN's gate and small cell; LSTM-Jump's jump policy and its REINFORCE baseline.
        adaptive_children=("skim_gate", "small_cell", "jump_policy", "baseline"),
        knobs=(
            Knob("skim_threshold", SKIM_THRESHOLDS, when={"reading_policy": "adaptive"}, applies=_is_skim),
            Knob("stop_threshold", STOP_THRESHOLDS, when={"reading_policy": "adaptive"}, applies=_is_jump),
        ),
        full_compute={"reading_policy": "full"},
        structural_fields=(
            "vocab_size",
            "embedding_size",
            "hidden_size",
            "small_hidden_size",
            "read_tokens",
            "max_jump",
        ),
        training_fields=(
            "skim_penalty",
            "gumbel_temperature",
            "policy_loss_coef",
            "baseline_loss_coef",
            "entropy_coef",
            "read_penalty",
            "reward",
            "full_reading_loss_coef",
        ),
        cost=reader_cost,
        description="RNN readers: Skim-RNN skims tokens with a small cell, LSTM-Jump jumps over them or stops",
        cli={"evaluate": cli_evaluate, "bench": cli_bench},
        export_refusal=(
            "Skim-RNN and LSTM-Jump decide token by token inside a recurrent loop (skim, jump or stop), a data-"
            "dependent loop over time steps rather than rows leaving between fixed segments of layers; "
            "adaptive_hf.onnx exports early exits only."
        ),
    )
)
