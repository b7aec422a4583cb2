"""Shared ``TrainingArguments`` of the tests that run the stock ``Trainer`` for a few steps on the CPU."""

from __future__ import annotations

from typing import Any


def cpu_training_args(output_dir, **settings: Any):
    """Arguments for a short CPU run that logs every step and writes no reports, checkpoints or progress bars.

    Args:
        output_dir: The run's folder (a test's ``tmp_path``).
        **settings: The run's own arguments (batch size, steps, learning rate, ...), and any of the defaults above
            to change.
    """
    from transformers import TrainingArguments  # imported on use, as the tests that train did

    defaults = {"report_to": [], "save_strategy": "no", "logging_steps": 1, "use_cpu": True, "disable_tqdm": True}
    return TrainingArguments(output_dir=str(output_dir), **{**defaults, **settings})
