"""Shared parts of the RNN text readers: outputs, the base ``PreTrainedModel``, inputs, full reading, cost model.

The readers (:mod:`.skim_rnn`, :mod:`.jump_lstm`) embed tokens, run LSTM cells over them and classify from the last
state. Padding is on the right: a row's sequence ends at its attention-mask length, and no cell ever runs on its
padding, so a batch gives the same results as its rows one at a time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ..core.flops import linear_flops
from ..core.hub import AdaptiveHubMixin
from ..core.inputs import check_class_labels, check_token_inputs
from .config import validate_reader_runtime

try:  # transformers v5: init functions that respect the "already loaded" flags of from_pretrained
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers
    init = nn.init


@dataclass
class ReaderSequenceClassifierOutput(ModelOutput):
    """Output of the skim/jump readers.

    Args:
        loss: Training objective when ``labels`` are given (cross-entropy plus, in training, the skim penalty or the
            REINFORCE terms). In eval mode, the cross-entropy of the returned logits.
        logits: ``(batch, num_labels)``.
        tokens_read: ``(batch,)`` tokens that went through the big LSTM cell.
        tokens_skimmed: ``(batch,)`` tokens that went through the small cell only (Skim-RNN; 0 for LSTM-Jump).
        tokens_jumped: ``(batch,)`` tokens never processed: jumped over, or after the reader stopped (LSTM-Jump;
            0 for Skim-RNN). ``tokens_read + tokens_skimmed + tokens_jumped`` is each row's length.
        num_decisions: ``(batch,)`` decisions taken: skim-gate evaluations (Skim-RNN) or jump-policy evaluations
            (LSTM-Jump).
        num_jumps: ``(batch,)`` jumps taken (LSTM-Jump; 0 for Skim-RNN).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    tokens_read: torch.Tensor | None = None
    tokens_skimmed: torch.Tensor | None = None
    tokens_jumped: torch.Tensor | None = None
    num_decisions: torch.Tensor | None = None
    num_jumps: torch.Tensor | None = None


def lstm_cell_flops(input_size: int, hidden_size: int, tokens: int = 1) -> int:
    """FLOPs of an LSTM cell (four gates) on ``tokens`` inputs; elementwise gate math is not counted.

    Args:
        input_size: Width of the input.
        hidden_size: Width of the state the cell writes.
        tokens: Number of steps.
    """
    return linear_flops(tokens, input_size + hidden_size, 4 * hidden_size)


def lengths_from_mask(attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device) -> torch.Tensor:
    """Per-row lengths of right-padded inputs; raises when the mask is not a prefix of ones.

    Args:
        attention_mask: ``(batch, seq)`` 1 for tokens and 0 for padding, or ``None`` (no padding).
        batch_size: Rows.
        seq_len: Padded length.
        device: Device of the result.
    """
    if attention_mask is None:
        return torch.full((batch_size,), seq_len, dtype=torch.long, device=device)
    mask = attention_mask.to(torch.bool) if attention_mask.dtype != torch.bool else attention_mask
    lengths = mask.sum(1)
    prefix = torch.arange(seq_len, device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, mask):
        raise ValueError(
            "`attention_mask` must be right-padded (ones, then zeros) for the RNN readers; tokenize with "
            "padding_side='right'."
        )
    return lengths.to(device=device, dtype=torch.long)


def run_lstm(
    inputs: torch.Tensor, lengths: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], cell: nn.LSTMCell
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``cell`` over each row's first ``lengths`` inputs with torch's fused LSTM; returns the last ``(h, c)``.

    Rows must have length >= 1. Padding is never computed (packed sequences).

    Args:
        inputs: ``(rows, steps, input_size)``.
        lengths: ``(rows,)`` steps to run per row, each in 1..steps.
        state: Initial ``(h, c)``, each ``(rows, hidden)``.
        cell: The ``nn.LSTMCell`` whose weights are used.
    """
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    hx = (state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous())
    steps = inputs.size(1)
    if bool((lengths == steps).all()):
        _, h, c = torch.lstm(inputs, hx, weights, True, 1, 0.0, False, False, True)
        return h[0], c[0]
    packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    order = packed.sorted_indices
    hx = (hx[0].index_select(1, order), hx[1].index_select(1, order))
    _, h, c = torch.lstm(packed.data, packed.batch_sizes, hx, weights, True, 1, 0.0, False, False)
    back = packed.unsorted_indices
    return h[0].index_select(0, back), c[0].index_select(0, back)


def lstm_steps(
    inputs: torch.Tensor,
    lengths: torch.Tensor | None,
    state: tuple[torch.Tensor, torch.Tensor],
    cell: nn.LSTMCell,
    weight_hh_t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``cell`` over each row's first ``lengths`` inputs, step by step; returns the last ``(h, c)``.

    For short chunks (LSTM-Jump reads a few tokens between decisions) this beats torch's fused LSTM, whose fixed
    per-call cost (weight reordering) is paid at every chunk. The input projection of all the tokens that are read
    is one matmul; each step then runs the recurrent matmul on the rows that still have a token, which form a
    prefix of the rows once they are sorted by length. Padding positions are never projected or stepped.

    Args:
        inputs: ``(rows, steps, input_size)``.
        lengths: ``(rows,)`` steps to run per row, each in 0..steps; ``None`` when every row runs all steps.
        state: Initial ``(h, c)``, each ``(rows, hidden)``.
        cell: The ``nn.LSTMCell`` whose weights are used.
        weight_hh_t: ``cell.weight_hh`` transposed into contiguous memory, when the caller has it cached (a
            matrix-vector product on that layout is much faster at batch 1); ``None`` uses a transposed view.
    """
    h, c = state
    rows, width = inputs.size(0), inputs.size(1)
    hidden = h.size(1)
    uniform = lengths is None or bool((lengths == width).all())
    if not uniform:
        order = torch.argsort(lengths, descending=True, stable=True)
        inputs, lengths, h, c = inputs[order], lengths[order], h[order], c[order]
        counts = (lengths.unsqueeze(0) > torch.arange(width, device=lengths.device).unsqueeze(1)).sum(1).tolist()
        valid = torch.arange(width, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
        projected = inputs.new_zeros(rows, width, 4 * hidden)
        projected[valid] = F.linear(inputs[valid], cell.weight_ih, cell.bias_ih + cell.bias_hh)
    else:
        counts = [rows] * width
        projected = F.linear(inputs, cell.weight_ih, cell.bias_ih + cell.bias_hh)
    w_hh = cell.weight_hh.t() if weight_hh_t is None else weight_hh_t
    final_h, final_c = h, c
    alive = rows
    for step in range(width):
        n = counts[step]
        if n == 0:
            break
        if n < alive:
            # Rows [n, alive) ended at the previous step: keep their state, drop them from the batch.
            final_h = torch.cat([final_h[:n], h[n:alive], final_h[alive:]])
            final_c = torch.cat([final_c[:n], c[n:alive], final_c[alive:]])
            h, c, alive = h[:n], c[:n], n
        gates = torch.addmm(projected[:n, step], h, w_hh)
        activated = gates.sigmoid()
        candidate = gates[:, 2 * hidden : 3 * hidden].tanh()
        c = torch.addcmul(activated[:, hidden : 2 * hidden] * c, activated[:, :hidden], candidate)
        h = activated[:, 3 * hidden :] * c.tanh()
    if alive == rows:
        final_h, final_c = h, c
    else:
        final_h = torch.cat([h, final_h[alive:]])
        final_c = torch.cat([c, final_c[alive:]])
    if not uniform:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows, device=order.device)
        final_h, final_c = final_h[inverse], final_c[inverse]
    return final_h, final_c


class ReaderPreTrainedModel(AdaptiveHubMixin, PreTrainedModel):
    """Base of the reader classifiers: embeddings, classifier, input checks, full reading and the cost model.

    Subclasses build ``self.embeddings``, ``self.big_cell`` (an ``nn.LSTMCell``), ``self.dropout`` and
    ``self.classifier`` through :meth:`_build_common`, and implement the adaptive forward.
    """

    auto_class_name = "AutoModelForSequenceClassification"
    main_input_name = "input_ids"

    def _build_common(self, config) -> None:
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.big_cell = nn.LSTMCell(config.embedding_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def post_init(self):
        super().post_init()
        self.embeddings.weight.requires_grad_(not self.config.freeze_embeddings)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LSTMCell) or getattr(module, "is_reader_cell", False):
            # torch's own LSTM init: uniform in +-1/sqrt(hidden) for every weight and bias.
            bound = 1.0 / math.sqrt(module.hidden_size)
            for parameter in module.parameters(recurse=False):
                init.uniform_(parameter, -bound, bound)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then each parameter is copied into its own aligned memory.

        Safetensors loads can leave parameters as views into the file at unaligned offsets, which sends the small
        LSTM matmuls down other SIMD paths and changes the last bits of the outputs; with aligned copies a reloaded
        reader computes bit for bit what the saved one did.
        """
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(model, tuple):  # output_loading_info=True
            first, *rest = model
            return (cls._own_parameters(first), *rest)
        return cls._own_parameters(model)

    def transposed_weight(self, weight: torch.Tensor) -> torch.Tensor | None:
        """``weight.t()`` in contiguous memory, cached across forwards, for inference; ``None`` while grads flow.

        The cache is keyed on the tensor's storage and version counter, so optimizer steps and
        ``load_state_dict`` (in-place updates) invalidate it.

        Args:
            weight: A 2-D parameter of this model.
        """
        if torch.is_grad_enabled() and weight.requires_grad:
            return None
        key = (weight.data_ptr(), weight._version, tuple(weight.shape), weight.dtype)
        cache = self.__dict__.setdefault("_transposed_cache", {})
        entry = cache.get(id(weight))
        if entry is None or entry[0] != key:
            entry = (key, weight.detach().t().contiguous())
            cache[id(weight)] = entry
        return entry[1]

    @staticmethod
    def _own_parameters(model):
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                tensor.data = tensor.data.clone()
        return model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    @classmethod
    def from_pretrained_embeddings(cls, model_name_or_path: str | os.PathLike, **config_kwargs):
        """A new reader whose token embeddings are copied from a pretrained HF model's input embeddings.

        ``vocab_size``, ``embedding_size`` and ``pad_token_id`` come from that model, so its tokenizer works as is.

        Args:
            model_name_or_path: A local folder or Hub name of any model with input embeddings (e.g. the packaged
                all-MiniLM-L6-v2).
            **config_kwargs: The reader's other config fields (``hidden_size``, ``num_labels``, ...).
        """
        from transformers import AutoModel

        for field in ("vocab_size", "embedding_size"):
            if field in config_kwargs:
                raise ValueError(f"`{field}` is taken from {str(model_name_or_path)!r}; do not pass it.")
        source = AutoModel.from_pretrained(model_name_or_path)
        weight = source.get_input_embeddings().weight.detach().float()
        config_kwargs.setdefault("pad_token_id", getattr(source.config, "pad_token_id", None))
        config = cls.config_class(vocab_size=weight.size(0), embedding_size=weight.size(1), **config_kwargs)
        model = cls(config)
        with torch.no_grad():
            model.embeddings.weight.copy_(weight)
        return model

    # ---------------------------------------------------------------------------------------------------- inputs
    def _prepare_inputs(self, input_ids, attention_mask, inputs_embeds, labels) -> tuple[torch.Tensor, int, int]:
        """Validates inputs; returns ``(lengths, batch_size, seq_len)``."""
        config = self.config
        validate_reader_runtime(config)
        batch_size = check_token_inputs(input_ids, attention_mask, inputs_embeds)
        if input_ids is not None:
            seq_len = input_ids.size(1)
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= config.vocab_size:
                raise ValueError(
                    f"`input_ids` must be token ids in [0, vocab_size={config.vocab_size}); got values in "
                    f"[{low}, {high}]. Use a tokenizer whose vocabulary matches the config."
                )
            device = input_ids.device
        else:
            seq_len = inputs_embeds.size(1)
            if inputs_embeds.size(2) != config.embedding_size:
                raise ValueError(
                    f"`inputs_embeds` must have last dimension embedding_size={config.embedding_size}; got "
                    f"{inputs_embeds.size(2)}."
                )
            device = inputs_embeds.device
        if labels is not None:
            check_class_labels(labels, batch_size, config.num_labels)
        lengths = lengths_from_mask(attention_mask, batch_size, seq_len, device)
        return lengths, batch_size, seq_len

    def _embed(self, input_ids, inputs_embeds) -> torch.Tensor:
        return self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds

    # ---------------------------------------------------------------------------------------------------- reading
    def _read_all(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Full reading (``reading_policy="full"``): the big cell over every token; returns the last states."""
        batch_size = inputs.size(0)
        zeros = inputs.new_zeros(batch_size, self.config.hidden_size)
        nonempty = lengths > 0
        if bool(nonempty.all()):
            return run_lstm(inputs, lengths, (zeros, zeros), self.big_cell)[0]
        rows = nonempty.nonzero().squeeze(1)
        if rows.numel() == 0:
            return zeros
        h, _ = run_lstm(
            inputs.index_select(0, rows), lengths.index_select(0, rows), (zeros[rows], zeros[rows]), self.big_cell
        )
        return zeros.index_copy(0, rows, h)

    def _classify(self, last_state: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(last_state))

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        return F.cross_entropy(logits, labels) if labels is not None else None

    # ------------------------------------------------------------------------------------------------ cost model
    def decision_flops(self) -> int:
        """FLOPs of one decision (skim gate or jump policy) on one sample; subclasses override."""
        return 0

    def skim_flops(self) -> int:
        """FLOPs of one skimmed token on one sample; subclasses with a small cell override."""
        return 0

    def adaptive_read_flops(self) -> int:
        """Extra FLOPs of a token read in adaptive mode (bookkeeping for later decisions); subclasses override."""
        return 0

    def theoretical_flops(self, outputs: ReaderSequenceClassifierOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample theoretical FLOPs spent, and what full reading (the big cell on every token) would spend.

        Args:
            outputs: The model's output for a batch (its token counts).

        Returns:
            ``(spent, full)``, each a ``(batch,)`` float64 tensor.
        """
        config = self.config
        big = lstm_cell_flops(config.embedding_size, config.hidden_size)
        head = linear_flops(1, config.hidden_size, config.num_labels)
        read = outputs.tokens_read.double()
        skimmed = outputs.tokens_skimmed.double()
        length = read + skimmed + outputs.tokens_jumped.double()
        decisions = outputs.num_decisions.double()
        spent = read * big + skimmed * self.skim_flops() + decisions * self.decision_flops()
        # Full reading takes no decisions and keeps no caches; adaptive rows pay the per-read bookkeeping.
        spent = spent + torch.where(decisions > 0, read, torch.zeros_like(read)) * self.adaptive_read_flops()
        return spent + head, length * big + head

    def theoretical_speedup(self, outputs: ReaderSequenceClassifierOutput) -> float:
        """Full-reading FLOPs over the FLOPs spent, summed over the batch.

        Args:
            outputs: The model's output for a batch.
        """
        spent, full = self.theoretical_flops(outputs)
        return float(full.sum() / spent.sum())

    # ------------------------------------------------------------------------------------------------ model card
    def pipeline_tag(self) -> str:
        return "text-classification"

    def card_rows(self) -> list[tuple[str, object]]:
        """``(field, value)`` rows for the model card; subclasses extend this."""
        config = self.config
        return [
            ("vocab_size", config.vocab_size),
            ("embedding_size", config.embedding_size),
            ("hidden_size", config.hidden_size),
            ("reading_policy", config.reading_policy),
        ]

    def model_card_details(self) -> tuple[list[str], str]:
        tags = ["adaptive-hf", "rnn-reader", self.config.model_type.replace("_", "-"), "text-classification"]
        body = "## Reader settings\n\n| setting | value |\n|---|---|\n"
        body += "".join(f"| `{name}` | `{value}` |\n" for name, value in self.card_rows())
        body += (
            "\nThe runtime knobs (`reading_policy`, and `skim_threshold` for Skim-RNN) are read from `model.config` "
            "at every forward. Tokenize with right padding.\n"
        )
        return tags, body
