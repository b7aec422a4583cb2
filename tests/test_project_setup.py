"""The README's commands are the ones CI runs, and the package imports and registers cleanly."""

from __future__ import annotations

import re
from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    for marker in ("install", "test"):
        match = re.search(rf"^<!-- ci:{marker} -->(.+)$", readme, re.M)
        assert match, f"README lacks the ci:{marker} marker"
        command = match.group(1).strip()
        # The marker repeats the visible command verbatim: a newcomer and CI run the same thing.
        assert f"```bash\n{command}\n```" in readme, command
    assert "bash" in (ROOT / ".ci" / "run").read_text()


def test_import_registers_every_family():
    import adaptive_hf
    from adaptive_hf.core.adapters.builtin import BUILTIN_ADAPTERS
    from adaptive_hf.early_exit.modeling import EARLY_EXIT_MODELS

    builtin = {adapter.model_type for adapter in BUILTIN_ADAPTERS}  # other tests register extra families
    for model_type, model_class in EARLY_EXIT_MODELS.items():
        if model_type not in builtin:
            continue
        config_class = model_class.config_class
        assert AutoConfig.for_model(config_class.model_type).__class__ is config_class
        assert AutoModelForSequenceClassification._model_mapping[config_class] is model_class
        assert hasattr(adaptive_hf, model_class.__name__), model_type
