"""One name per idea: ``head_pooling`` / ``head_type`` in every technique, the old names as deprecated aliases.

Early exits said ``exit_pooling`` / ``exit_head``, halting ``halting_pooling`` / ``classifier_head``. The old names
stay accepted for one release (constructor keywords, old ``config.json`` files, attributes), each use warning with a
``FutureWarning`` that names the new one; only the new names are ever saved.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from text_testers import TINY_TIMM_VIT, TINY_TIMM_VIT_ARGS, padded_batch, tiny_backbone_config
from transformers import AutoConfig, AutoModelForSequenceClassification

import adaptive_hf
from adaptive_hf import (
    AutoEarlyExitModelForSequenceClassification,
    AutoHaltingModelForSequenceClassification,
    EarlyExitTimmForImageClassification,
    HaltingTimmConfig,
    HaltingTimmForImageClassification,
)
from adaptive_hf.core.technique import TECHNIQUES
from adaptive_hf.early_exit.config import EXIT_RENAMED_FIELDS, EarlyExitBertConfig
from adaptive_hf.early_exit.vision_config import EarlyExitTimmConfig, EarlyExitViTConfig
from adaptive_hf.halting.config import HALTING_RENAMED_FIELDS, HaltingBertConfig

NEW_NAMES = ("head_pooling", "head_type")
TINY_HF_VIT = dict(
    image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
)


def _text(config_class):
    return lambda **kw: config_class(**tiny_backbone_config("bert").to_dict() | {"num_labels": 3} | kw)


def _timm(config_class):
    args = dict(TINY_TIMM_VIT_ARGS)
    return lambda **kw: config_class(architecture=TINY_TIMM_VIT, model_args=args, num_labels=3, **kw)


# name -> (config factory, old-name keywords with values other than the defaults where the technique allows one)
CASES = {
    "early_exit_text": (_text(EarlyExitBertConfig), {"exit_pooling": "cls", "exit_head": "linear"}),
    "early_exit_timm": (_timm(EarlyExitTimmConfig), {"exit_pooling": "mean", "exit_head": "mlp"}),
    "early_exit_vit": (lambda **kw: EarlyExitViTConfig(**TINY_HF_VIT, num_labels=3, **kw), {"exit_pooling": "mean"}),
    "halting_text": (_text(HaltingBertConfig), {"halting_pooling": "cls", "classifier_head": "linear"}),
    "halting_timm": (_timm(HaltingTimmConfig), {"halting_pooling": "mean", "classifier_head": "linear"}),
}
RENAMED = {**EXIT_RENAMED_FIELDS, **HALTING_RENAMED_FIELDS}


def _text_batch(rows: int, length: int) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = padded_batch(rows, length)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_keywords_set_the_new_fields_with_a_warning_naming_them(case):
    factory, old_kwargs = CASES[case]
    with pytest.warns(FutureWarning) as record:
        config = factory(**old_kwargs)
    messages = _messages(record)
    for old, value in old_kwargs.items():
        new = RENAMED[old]
        assert any(f"`{old}`" in m and f"use `{new}`" in m for m in messages), messages
        assert getattr(config, new) == value
    saved = config.to_dict()
    assert set(NEW_NAMES) <= set(saved) and not set(RENAMED) & set(saved)


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_and_new_name_together_are_refused(case):
    factory, old_kwargs = CASES[case]
    for old, value in old_kwargs.items():
        with pytest.raises(ValueError, match=f"both `{old}` and `{RENAMED[old]}`"):
            factory(**{old: value, RENAMED[old]: value})


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_attribute_reads_and_writes_the_new_field(case):
    factory, old_kwargs = CASES[case]
    config = factory()
    for old, value in old_kwargs.items():
        new = RENAMED[old]
        with pytest.warns(FutureWarning, match=f"use `{new}`"):
            assert getattr(config, old) == getattr(config, new)
        with pytest.warns(FutureWarning, match=f"use `{new}`"):
            setattr(config, old, value)
        assert getattr(config, new) == value and old not in vars(config)
    assert not set(RENAMED) & set(config.to_dict())


def _rename_saved_fields(folder, renames: dict[str, str]) -> None:
    """Rewrites a saved config.json with the old field names, as a model saved by the previous release has it."""
    path = folder / "config.json"
    saved = json.loads(path.read_text())
    for old, new in renames.items():
        saved[old] = saved.pop(new)
    path.write_text(json.dumps(saved))


def _text_models():
    config = tiny_backbone_config("bert")
    early = AutoEarlyExitModelForSequenceClassification.from_config(config, num_labels=3, head_type="linear")
    halting = AutoHaltingModelForSequenceClassification.from_config(config, num_labels=3, head_pooling="cls")
    batch = _text_batch(3, 8)
    return [(early, EXIT_RENAMED_FIELDS, batch), (halting, HALTING_RENAMED_FIELDS, batch)]


def _timm_models():
    images = {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}
    early = EarlyExitTimmForImageClassification.from_timm(TINY_TIMM_VIT, num_labels=3, **TINY_TIMM_VIT_ARGS)
    halting = HaltingTimmForImageClassification.from_timm(TINY_TIMM_VIT, num_labels=3, **TINY_TIMM_VIT_ARGS)
    return [(early, EXIT_RENAMED_FIELDS, images), (halting, HALTING_RENAMED_FIELDS, images)]


@pytest.mark.parametrize("models", [_text_models, _timm_models], ids=["text", "timm"])
def test_a_config_json_with_the_old_names_still_loads_and_resaves_with_the_new(models, tmp_path):
    torch.manual_seed(0)
    for index, (model, renames, batch) in enumerate(models()):
        model.eval()
        current, folder, resaved = (tmp_path / f"{name}_{index}" for name in ("current", "old", "resaved"))
        model.save_pretrained(current)
        model.save_pretrained(folder)
        _rename_saved_fields(folder, renames)
        reference = type(model).from_pretrained(current).eval()
        with pytest.warns(FutureWarning) as record:
            loaded = type(model).from_pretrained(folder).eval()
        assert {old for old in renames if any(f"`{old}`" in m for m in _messages(record))} == set(renames)
        unnamed = {"_name_or_path": ""}
        assert loaded.config.to_diff_dict() | unnamed == reference.config.to_diff_dict() | unnamed
        for new in NEW_NAMES:
            assert getattr(loaded.config, new) == getattr(model.config, new)
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).logits, reference(**batch).logits, rtol=0, atol=0)
        loaded.save_pretrained(resaved)
        saved = json.loads((resaved / "config.json").read_text())
        assert set(NEW_NAMES) <= set(saved) and not set(RENAMED) & set(saved)


def test_the_auto_classes_take_the_old_names_as_settings(tmp_path):
    config = tiny_backbone_config("bert")
    with pytest.warns(FutureWarning, match="use `head_type`"):
        model = AutoEarlyExitModelForSequenceClassification.from_config(config, num_labels=3, exit_head="linear")
    assert model.config.head_type == "linear"
    model.save_pretrained(tmp_path)
    with pytest.warns(FutureWarning, match="use `head_pooling`"):
        loaded = AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path, exit_pooling="cls")
    assert loaded.config.head_pooling == "cls" and model.config.head_pooling == "mean"
    with pytest.raises(ValueError, match="both `exit_pooling` and `head_pooling`"):
        AutoEarlyExitModelForSequenceClassification.from_pretrained(tmp_path, exit_pooling="cls", head_pooling="cls")
    with pytest.warns(FutureWarning, match="use `head_pooling`"):
        halting = AutoHaltingModelForSequenceClassification.from_config(config, num_labels=3, halting_pooling="cls")
    assert halting.config.head_pooling == "cls"
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path)  # registered Auto class, new names only
    assert plain.config.head_type == "linear"


def test_from_timm_treats_the_old_names_as_settings_not_timm_arguments():
    # A timm argument it does not know would make timm.create_model raise a TypeError.
    with pytest.warns(FutureWarning, match="use `head_type`"):
        early = EarlyExitTimmForImageClassification.from_timm(
            TINY_TIMM_VIT, num_labels=3, exit_head="mlp", **TINY_TIMM_VIT_ARGS
        )
    assert early.config.head_type == "mlp" and "exit_head" not in early.config.model_args
    with pytest.warns(FutureWarning, match="use `head_pooling`"):
        halting = HaltingTimmForImageClassification.from_timm(
            TINY_TIMM_VIT, num_labels=3, halting_pooling="mean", **TINY_TIMM_VIT_ARGS
        )
    assert halting.config.head_pooling == "mean" and "halting_pooling" not in halting.config.model_args


def test_building_with_the_new_names_warns_nothing():
    config = tiny_backbone_config("bert")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model = AutoEarlyExitModelForSequenceClassification.from_config(config, num_labels=3, head_pooling="cls")
        model.eval()(**_text_batch(2, 6))
        AutoHaltingModelForSequenceClassification.from_config(config, num_labels=3, head_type="linear")
        HaltingTimmForImageClassification.from_timm(TINY_TIMM_VIT, num_labels=3, **TINY_TIMM_VIT_ARGS)


SUPPORTED_BACKBONES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "albert",
    "electra",
    "mpnet",
    "modernbert",
    "deberta-v2",
    "llama",
    "qwen2",
    "qwen3",
    "vit",
    "dinov2",
    "convnext",
)


@pytest.mark.parametrize("model_type", SUPPORTED_BACKBONES)
def test_the_shared_names_are_free_in_every_supported_backbone_config(model_type):
    # Technique configs subclass the backbone's config: a backbone field of the same name would be overwritten.
    config = AutoConfig.for_model(model_type)
    for name in NEW_NAMES + tuple(RENAMED):
        assert not hasattr(config, name), (model_type, name)
        assert name not in config.to_dict() and name not in type(config).attribute_map


def test_every_technique_declares_its_full_compute_settings_and_only_new_structural_names():
    assert {"early_exit", "halting", "switch_moe", "readers", "video"} <= set(TECHNIQUES)
    for spec in TECHNIQUES.values():
        assert callable(spec.full_compute) or spec.full_compute, spec.name
        assert not set(RENAMED) & set(spec.structural_fields), spec.name
    assert adaptive_hf.full_compute is adaptive_hf.core.technique.full_compute


def test_a_config_class_declaring_an_old_name_declares_the_new_field():
    # What a family's config built from the technique's fields plus its own old-name defaults looks like.
    from adaptive_hf.core.adapters.text import TEXT_ENCODER_ADAPTERS
    from adaptive_hf.core.configuration import make_family_config_class
    from adaptive_hf.early_exit.config import EXIT_FIELD_SPECS, EarlyExitConfigMixin

    fields = {**EXIT_FIELD_SPECS, "exit_pooling": ("str", "cls"), "exit_head": ("str", "linear")}
    with pytest.warns(DeprecationWarning, match="declares the field `exit_pooling`, now named `head_pooling`"):
        config_class = make_family_config_class(
            TEXT_ENCODER_ADAPTERS["bert"],
            class_name="EarlyExitLegacyBertConfig",
            model_type="early_exit_legacy_bert",
            mixin=EarlyExitConfigMixin,
            fields=fields,
            module=__name__,
        )
    assert not {"exit_pooling", "exit_head"} & set(config_class.__dataclass_fields__)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config = config_class(**tiny_backbone_config("bert").to_dict() | {"num_labels": 3})
    assert (config.head_pooling, config.head_type) == ("cls", "linear")  # the old-name defaults win
    assert not set(RENAMED) & set(config.to_dict())
    with pytest.warns(FutureWarning, match="use `head_pooling`"):
        assert config_class(**tiny_backbone_config("bert").to_dict(), exit_pooling="mean").head_pooling == "mean"

    with pytest.warns(DeprecationWarning, match="`classifier_head`, now named `head_type`"):

        class LinearHaltingTimmConfig(HaltingTimmConfig):
            classifier_head: str = "linear"
            halting_pooling: str = "mean"

    assert LinearHaltingTimmConfig(architecture=TINY_TIMM_VIT, model_args=dict(TINY_TIMM_VIT_ARGS)).head_pooling == (
        "mean"
    )
