"""Helpers shared by the technique models: the text-backbone mixin and per-family class factories."""

from __future__ import annotations

import torch

from .adapters.text import EncoderState, TextEncoderAdapter
from .inputs import check_class_labels, check_token_inputs, position_limit
from .peft import refuse_nested_peft_wrappers


class TextBackboneMixin:
    """For models whose stock base model sits under ``base_model_prefix``: its adapter and validated embedding.

    Subclasses set ``adapter_class``.
    """

    adapter_class: type[TextEncoderAdapter] = TextEncoderAdapter
    # forward takes ``**unsupported`` only to refuse it by name; without this the Trainer would read the ``**`` as
    # accepting loss keywords and pass ``num_items_in_batch``, which the per-sample losses here do not use.
    accepts_loss_kwargs = False

    @property
    def adapter(self) -> TextEncoderAdapter:
        """The backbone adapter over this model's base model (rebuilt if the base model is replaced)."""
        base_model = getattr(self, self.base_model_prefix)
        cached = self.__dict__.get("_adapter")
        if cached is None or cached.base_model is not base_model or getattr(cached, "task_model", None) is not self:
            cached = self.adapter_class(base_model)
            cached.task_model = self  # where a family's own head (DeBERTa's pooler) lives
            self.__dict__["_adapter"] = cached
        return cached

    def embed_text_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> EncoderState:
        """Checks the inputs and labels (errors name the field) and runs the embeddings.

        Args:
            input_ids: ``(batch, seq)`` token ids.
            attention_mask: ``(batch, seq)`` 1 for tokens, 0 for padding.
            token_type_ids: ``(batch, seq)`` segment ids.
            position_ids: ``(batch, seq)`` positions.
            inputs_embeds: ``(batch, seq, dim)`` instead of ``input_ids``.
            labels: ``(batch,)`` class ids, or ``None``.
        """
        refuse_nested_peft_wrappers(self)
        base_model = getattr(self, self.base_model_prefix)
        batch_size = check_token_inputs(
            input_ids,
            attention_mask,
            inputs_embeds,
            vocab_size=self.config.vocab_size,
            max_length=position_limit(base_model),
        )
        if labels is not None:
            check_class_labels(labels, batch_size, self.config.num_labels)
        return self.adapter.embed(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)


def make_family_model_class(
    adapter, *, class_name: str, mixin: type, config_class: type, module: str, doc: str
) -> type:
    """Builds a technique's model class for one backbone family.

    The class combines the technique's mixin with the family's ``PreTrainedModel`` base (weight init, attention
    implementation flags, ``base_model_prefix``), so the base model sits under the family's usual attribute name and
    plain checkpoints of the family load into it.

    Args:
        adapter: The family's backbone adapter class.
        class_name: Name of the new class.
        mixin: The technique's model mixin.
        config_class: The technique's config class for the family.
        module: ``__module__`` of the new class (the technique's modeling module, for the Hub bundle).
        doc: Class docstring.
    """
    namespace = {
        "__module__": module,
        "__qualname__": class_name,
        "__doc__": doc,
        "config_class": config_class,
        "adapter_class": adapter,
        "base_model_prefix": adapter.pretrained_model_class.base_model_prefix,
    }
    return type(class_name, (mixin, adapter.pretrained_model_class), namespace)
