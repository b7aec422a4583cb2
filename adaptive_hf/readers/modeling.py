"""Shared parts of the RNN text readers: outputs, the base ``PreTrainedModel``, inputs, full reading, cost model.

The readers (:mod:`.skim_rnn`, :mod:`.jump_lstm`) embed tokens, run LSTM cells over them and classify from the last
state. Padding is on the right: a row's sequence ends at its attention-mask length, and no cell ever runs on its
padding, so a batch gives the same results as its rows one at a time.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ..core.flops import linear_flops
from ..core.hub import AdaptiveHubMixin, own_loaded_tensors
from ..core.inputs import check_class_labels, check_forward_options, check_token_inputs
from ..core.peft import refuse_nested_peft_wrappers
from .config import validate_reader_runtime

try:  # transformers v5: init functions that respect the "already loaded" flags of from_pretrained
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers
    init = nn.init

# Per-model caches of inference weight layouts (see ReaderPreTrainedModel.inference_cache).
_INFERENCE_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def _onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's prepacked linear (CPU builds with mkldnn)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_reorder_linear_weight")
    )


class InferenceLinear:
    """``x @ weight.T + bias`` for inference, with the weight laid out once for the fastest CPU kernel.

    On CPU builds with oneDNN the weight is prepacked for oneDNN's inner product: on the machines we measured
    (AMD EPYC, one thread) it runs the LSTM-sized products 1.5-3x faster than the default BLAS ``addmm``, most of
    all at 2-16 rows, where BLAS re-packs the whole weight at every call. Elsewhere it is ``addmm`` on a cached
    transposed copy. The results equal ``F.linear`` up to float rounding.

    Args:
        weight: ``(out, in)``; detached and copied.
        bias: ``(out,)``; detached and copied.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        weight, self.bias = weight.detach(), bias.detach().contiguous()
        self.packed = None
        if weight.device.type == "cpu" and weight.dtype == torch.float32 and _onednn_linear_available():
            try:
                # The batch-size hint only tunes the layout; any number of rows works.
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), 8)
            except RuntimeError:  # pragma: no cover - builds without a usable oneDNN
                self.packed = None
        self.weight_t = weight.t().contiguous() if self.packed is None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, in)`` -> ``(rows, out)``."""
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return torch.addmm(self.bias, x, self.weight_t)


@dataclass
class FastLstm:
    """An ``nn.LSTMCell``'s weights laid out for inference (see :meth:`ReaderPreTrainedModel.fast_lstm`).

    Args:
        input: ``x -> W_ih x + b_ih + b_hh`` (the whole bias).
        recurrent: ``h -> W_hh h``.
        joint: ``[x; h] -> W_ih x + W_hh h + b_ih + b_hh`` in one product (one token at a time).
    """

    input: InferenceLinear
    recurrent: InferenceLinear
    joint: InferenceLinear


def greedy_jump_actions(policy_logits: torch.Tensor, stop_threshold: float) -> torch.Tensor:
    """LSTM-Jump's eval decisions: the most likely action, except that a stop with probability < ``stop_threshold``
    becomes the most likely jump.

    Args:
        policy_logits: ``(rows, max_jump + 2)`` jump-policy logits: action 0 stops, action ``a >= 1`` skips
            ``a - 1`` tokens.
        stop_threshold: See ``JumpLstmConfig.stop_threshold``; 0 = plain argmax.
    """
    action = policy_logits.argmax(-1)
    if stop_threshold <= 0.0:
        return action
    stop_probability = torch.softmax(policy_logits, dim=-1)[:, 0]
    best_jump = policy_logits[:, 1:].argmax(-1) + 1
    return torch.where((action == 0) & (stop_probability < stop_threshold), best_jump, action)


def lstm_update_(gates: torch.Tensor, c: torch.Tensor, h_out: torch.Tensor) -> None:
    """The LSTM cell's elementwise part, in place: ``gates`` (i, f, g, o pre-activations) -> new ``c`` and ``h``.

    Args:
        gates: ``(rows, 4 * hidden)``; overwritten (its sigmoids).
        c: ``(rows, hidden)`` cell state, updated in place.
        h_out: ``(rows, hidden)`` written with the new hidden state (may be a view into a larger buffer).
    """
    hidden = c.size(1)
    candidate = gates[:, 2 * hidden : 3 * hidden].tanh()
    gates.sigmoid_()
    c.mul_(gates[:, hidden : 2 * hidden]).addcmul_(gates[:, :hidden], candidate)
    torch.mul(gates[:, 3 * hidden :], c.tanh(), out=h_out)


def lstm_steps(
    inputs: torch.Tensor,
    lengths: torch.Tensor | None,
    state: tuple[torch.Tensor, torch.Tensor],
    cell: nn.LSTMCell,
    fast: FastLstm | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``cell`` over each row's first ``lengths`` inputs, step by step; returns the last ``(h, c)``.

    For short chunks (LSTM-Jump reads a few tokens between decisions) this beats torch's fused LSTM, whose fixed
    per-call cost (weight reordering) is paid at every chunk. Rows are sorted by length, so the rows that still
    have a token at step ``t`` are a prefix; the input projection of all the tokens that are read (and only
    those: padding and clamped positions are never projected) is one product, laid out step-major as in a packed
    sequence; each step then runs the recurrent product on that prefix of the rows.

    Args:
        inputs: ``(rows, steps, input_size)``.
        lengths: ``(rows,)`` steps to run per row, each in 0..steps; ``None`` when every row runs all steps.
        state: Initial ``(h, c)``, each ``(rows, hidden)``.
        cell: The ``nn.LSTMCell`` whose weights are used (differentiable path, when ``fast`` is ``None``).
        fast: The cell's weights prepacked for inference (:meth:`ReaderPreTrainedModel.fast_lstm`); then no
            autograd graph is built and the state is updated in place in preallocated buffers.
    """
    rows, width = inputs.size(0), inputs.size(1)
    uniform = lengths is None or bool((lengths == width).all())
    if uniform:
        counts = [rows] * width
        order = None
        # Step-major: step t's rows are one contiguous block, as in a packed sequence.
        tokens = inputs.transpose(0, 1).reshape(width * rows, inputs.size(2))
    else:
        order = torch.argsort(lengths, descending=True, stable=True)
        inputs, lengths = inputs.index_select(0, order), lengths.index_select(0, order)
        state = (state[0].index_select(0, order), state[1].index_select(0, order))
        steps = torch.arange(width, device=lengths.device)
        valid = steps.unsqueeze(1) < lengths.unsqueeze(0)  # (steps, rows)
        counts = valid.sum(1).tolist()
        tokens = inputs.transpose(0, 1)[valid]
    if fast is None:
        final_h, final_c = _lstm_steps_autograd(tokens, counts, state, cell)
    else:
        final_h, final_c = _lstm_steps_fast(tokens, counts, state, fast)
    if order is not None:
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows, device=order.device)
        final_h, final_c = final_h.index_select(0, inverse), final_c.index_select(0, inverse)
    return final_h, final_c


def _lstm_steps_fast(tokens, counts, state, fast: FastLstm):
    """Inference steps: each step updates the prefix of the rows in place; rows past their end keep their state."""
    h, c = state[0].clone(), state[1].clone()
    projected = fast.input(tokens) if tokens.size(0) else tokens.new_zeros(0, 4 * h.size(1))
    offset = 0
    for n in counts:
        if n == 0:
            break
        gates = fast.recurrent(h[:n]).add_(projected[offset : offset + n])
        offset += n
        lstm_update_(gates, c[:n], h[:n])
    return h, c


def _lstm_steps_autograd(tokens, counts, state, cell: nn.LSTMCell):
    """Differentiable steps (training): the same computation without in-place updates of the state."""
    h, c = state
    hidden = h.size(1)
    projected = F.linear(tokens, cell.weight_ih, cell.bias_ih + cell.bias_hh)
    w_hh = cell.weight_hh.t()
    rows = h.size(0)
    done_h, done_c = [], []
    alive, offset = rows, 0
    for n in counts:
        if n == 0:
            break
        if n < alive:
            # Rows [n, alive) ended at the previous step: keep their state, drop them from the batch.
            done_h.insert(0, h[n:alive])
            done_c.insert(0, c[n:alive])
            h, c, alive = h[:n], c[:n], n
        gates = torch.addmm(projected[offset : offset + n], h, w_hh)
        offset += n
        activated = gates.sigmoid()
        candidate = gates[:, 2 * hidden : 3 * hidden].tanh()
        c = torch.addcmul(activated[:, hidden : 2 * hidden] * c, activated[:, :hidden], candidate)
        h = activated[:, 3 * hidden :] * c.tanh()
    if done_h:
        h, c = torch.cat([h, *done_h]), torch.cat([c, *done_c])
    return h, c


class ReaderPreTrainedModel(AdaptiveHubMixin, PreTrainedModel):
    """Base of the reader classifiers: embeddings, classifier, input checks, full reading and the cost model.

    Subclasses build ``self.embeddings``, ``self.big_cell`` (an ``nn.LSTMCell``), ``self.dropout`` and
    ``self.classifier`` through :meth:`_build_common`, and implement the adaptive forward.
    """

    auto_class_name = "AutoModelForSequenceClassification"
    main_input_name = "input_ids"
    # forward takes ``**unsupported`` only to refuse it by name; the Trainer must not read it as loss keywords.
    accepts_loss_kwargs = False

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
        """``PreTrainedModel.from_pretrained``, with aligned copies of the tensors (see ``own_loaded_tensors``)."""
        return own_loaded_tensors(super().from_pretrained(*args, **kwargs))

    def inference_cache(self, name: str, sources: tuple[torch.Tensor, ...], build):
        """A value derived from parameters (packed or rearranged weights), cached across inference forwards.

        The cache lives outside the module (copies and pickles of the model do not carry it) and is keyed on the
        sources' storage and version counters, so optimizer steps, ``load_state_dict`` and ``.to()`` invalidate
        it.

        Args:
            name: Key of the value.
            sources: The parameters it is built from.
            build: Zero-argument function that builds it (run under ``torch.no_grad()``).
        """
        key = tuple((t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for t in sources)
        cache = _INFERENCE_CACHES.setdefault(self, {})
        entry = cache.get(name)
        if entry is None or entry[0] != key:
            with torch.no_grad():
                entry = (key, build())
            cache[name] = entry
        return entry[1]

    def fast_lstm(self, cell: nn.LSTMCell | None = None) -> FastLstm:
        """``cell``'s weights (default: the big cell) laid out for inference steps (:class:`FastLstm`).

        Args:
            cell: An ``nn.LSTMCell`` of this model.
        """
        cell = self.big_cell if cell is None else cell
        sources = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)

        def build() -> FastLstm:
            bias = cell.bias_ih + cell.bias_hh
            return FastLstm(
                input=InferenceLinear(cell.weight_ih, bias),
                recurrent=InferenceLinear(cell.weight_hh, torch.zeros_like(bias)),
                joint=InferenceLinear(torch.cat([cell.weight_ih, cell.weight_hh], 1), bias),
            )

        return self.inference_cache(f"fast_lstm:{id(cell)}", sources, build)

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
    def check_forward_options(self, output_attentions, output_hidden_states, unsupported: dict) -> None:
        """Accepts ``output_attentions``/``output_hidden_states`` as ``None``/``False``; refuses ``True`` and any
        other keyword by name (see ``core.inputs.check_forward_options``)."""
        check_forward_options(
            type(self).__name__,
            output_attentions,
            output_hidden_states,
            unsupported,
            reason="a recurrent reader has no attention, and rows read different tokens, so no per-step tensor "
            "covers the whole batch",
            accepted="input_ids, attention_mask, token_type_ids, inputs_embeds, labels",
        )
        refuse_nested_peft_wrappers(self)

    def _prepare_inputs(self, input_ids, attention_mask, inputs_embeds, labels) -> tuple[torch.Tensor, int, int]:
        """Validates inputs; returns ``(lengths, batch_size, seq_len)``."""
        config = self.config
        validate_reader_runtime(config)
        if self.training and labels is not None:
            config.validate_reader()  # the training fields (penalties, coefficients) may have changed since init
        batch_size = check_token_inputs(input_ids, attention_mask, inputs_embeds, vocab_size=config.vocab_size)
        if input_ids is not None:
            seq_len = input_ids.size(1)
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
        """Full reading (``reading_policy="full"``): the big cell over every token; returns the last states.

        Torch's fused LSTM (:func:`run_lstm`, packed sequences for padded batches) on the big cell's own weight
        tensors, with or without gradients, so full reading costs what a stock ``nn.LSTM`` costs (issue 13). On one
        CPU thread (AMD EPYC, hidden 200, inputs 384, 50 tokens) the prepacked step loop of :func:`lstm_steps`
        took 3.3 ms per row at batch 1 against 1.0 ms fused, and 20 against 16 ms at batch 32; the step loop
        stays where chunks are short (LSTM-Jump, streaming), where the fused kernel's per-call cost dominates.
        """
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
