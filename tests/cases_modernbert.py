"""Shared-tester cases of ModernBERT: early exits, halting (sample and token, ACT and PonderNet) and switch MoE.

They are the text cases of the other encoder families with one difference: the final classifier is ModernBERT's
own head (``head`` + ``classifier`` on the final-normed, pooled states), so the reference is the stock
``ModernBertForSequenceClassification`` holding the same weights.
"""

from __future__ import annotations

import dataclasses

from adaptive_case import AdaptiveCase
from cases_exits_halting import FFN_INPUT_MODULE, early_exit_text_case, halting_text_case
from cases_moe_readers_video import moe_case
from transformers import ModernBertConfig, ModernBertForSequenceClassification

FFN_INPUT_MODULE["modernbert"] = "mlp"  # the module the per-token work hooks count tokens at
_NOT_BACKBONE_CONFIG = ("model_type", "architectures", "auto_map", "transformers_version")


def stock_classifier(model, new_prefix: str) -> ModernBertForSequenceClassification:
    """The stock classifier with ``model``'s backbone and head weights (every weight but the new ``new_prefix``)."""
    values = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_BACKBONE_CONFIG}
    plain = ModernBertForSequenceClassification(ModernBertConfig(**values))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(new_prefix)}, strict=True)
    return plain.eval()


def _stock_reference(new_prefix: str):
    def reference(model, batch):
        return stock_classifier(model, new_prefix)(**batch).logits

    return reference


def modernbert_cases() -> list[AdaptiveCase]:
    exits = dataclasses.replace(
        early_exit_text_case("modernbert"),
        reference=_stock_reference("exit_heads."),
        trainer_step=True,
        variants=(
            ({"head_pooling": "mean"}, None),
            ({"head_pooling": "cls"}, None),
            ({"classifier_pooling": "cls"}, None),
            ({"head_pooling": "pooler"}, ValueError),
        ),
    )
    halting = [
        dataclasses.replace(
            halting_text_case("modernbert", granularity, method),
            reference=_stock_reference("halting_units."),
            remote_code=(granularity, method) == ("token", "act"),
        )
        for granularity in ("sample", "token")
        for method in ("act", "pondernet")
    ]
    # Remote code for MoE too: its bundle must carry the packed-FFN slot of the ModernBERT adapter.
    moe = dataclasses.replace(moe_case("modernbert"), remote_code=True)
    return [exits, *halting, moe]
