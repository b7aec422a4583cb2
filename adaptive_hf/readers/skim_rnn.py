"""Skim-RNN (Seo et al., ICLR 2018) as a Hugging Face sequence classifier.

At each token a gate looks at ``[x_t; h_{t-1}]`` and chooses to *read* (the big LSTM cell updates the whole state)
or to *skim* (a small LSTM cell updates only the first ``small_hidden_size`` dimensions; the rest is copied).

* Training: both cells run at every token; a straight-through Gumbel-softmax sample picks one, so the gate gets
  gradients; the loss adds ``skim_penalty * mean(-log P(skim))``.
* Eval (``reading_policy="adaptive"``): real skipping, inference only. The big cell runs only on the tokens that
  are read (gathered, several rows at once), the small cell only on the tokens that are skimmed; the decision and
  the small cell share one small product per token. Each row keeps its own position, so rows skim on
  independently and meet at reads (see ``_forward_skim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import SkimRnnConfig
from .modeling import (
    FastLstm,
    InferenceLinear,
    ReaderPreTrainedModel,
    ReaderSequenceClassifierOutput,
    linear_flops,
    lstm_cell_flops,
    lstm_update_,
)


class SmallLstmCell(nn.Module):
    """The skim cell: an LSTM cell of width ``small`` that reads ``x_t`` and the whole previous state.

    Its input is ``[x_t; h[small:]]`` and its recurrent state ``(h[:small], c[:small])``, which is the paper's
    ``f'(x_t, h_{t-1})`` with the weight on ``h_{t-1}`` split in two, so torch's fused ``lstm_cell`` computes it.

    Args:
        input_size: Width of ``x_t``.
        hidden_size: Width of the full state.
        small_hidden_size: Width of the part of the state this cell writes.
    """

    is_reader_cell = True

    def __init__(self, input_size: int, hidden_size: int, small_hidden_size: int):
        super().__init__()
        self.small = small_hidden_size
        # `hidden_size` is what the weight init's bound uses: the width this cell writes, as in nn.LSTMCell.
        self.hidden_size = small_hidden_size
        gates = 4 * small_hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size + hidden_size - small_hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, small_hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        self.bias_hh = nn.Parameter(torch.empty(gates))
        bound = 1.0 / math.sqrt(small_hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New ``(h[:small], c[:small])`` from ``x`` ``(rows, input)`` and the full ``h``, ``c`` ``(rows, hidden)``."""
        small = self.small
        inputs = torch.cat([x, h[:, small:]], dim=1)
        return torch.lstm_cell(
            inputs, (h[:, :small], c[:, :small]), self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        )


class SkimRnnForSequenceClassification(ReaderPreTrainedModel):
    """Skim-RNN text classifier: big/small LSTM cells with a per-token skim gate.

    Args:
        config: A :class:`SkimRnnConfig`.
    """

    config_class = SkimRnnConfig

    def __init__(self, config: SkimRnnConfig):
        super().__init__(config)
        self._build_common(config)
        self.small_cell = SmallLstmCell(config.embedding_size, config.hidden_size, config.small_hidden_size)
        # Logits of (read, skim) from [x_t; h_{t-1}].
        self.skim_gate = nn.Linear(config.embedding_size + config.hidden_size, 2)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ cost model
    def decision_flops(self) -> int:
        config = self.config
        small, out = config.small_hidden_size, 4 * config.small_hidden_size + 1
        # Every token, read or skimmed, pays one product that gives the skim score and the small cell's gates:
        # its input term (all tokens in one matmul up front) and its head term (each step).
        return linear_flops(1, config.embedding_size, out) + linear_flops(1, small, out)

    def skim_flops(self) -> int:
        # A skimmed token's small-cell matmuls are in decision_flops (computed for every token); what remains is
        # elementwise.
        return 0

    def adaptive_read_flops(self) -> int:
        config = self.config
        # After a read, the new tail's term in the small cell and the score (skimming leaves the tail unchanged).
        return linear_flops(1, config.hidden_size - config.small_hidden_size, 4 * config.small_hidden_size + 1)

    def full_token_flops(self) -> int:
        """FLOPs of one token through the big cell."""
        return lstm_cell_flops(self.config.embedding_size, self.config.hidden_size)

    def card_rows(self):
        config = self.config
        return super().card_rows() + [
            ("small_hidden_size", config.small_hidden_size),
            ("skim_threshold", config.skim_threshold),
            ("gumbel_temperature", config.gumbel_temperature),
            ("skim_penalty", config.skim_penalty),
        ]

    # -------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **unsupported,
    ) -> ReaderSequenceClassifierOutput | tuple:
        """Classifies a batch of right-padded token sequences, skimming tokens in eval mode.

        Args:
            input_ids: ``(batch, seq)`` token ids of any HF tokenizer matching ``config.vocab_size``.
            attention_mask: ``(batch, seq)`` right-padded mask (1 = token); ``None`` means no padding.
            token_type_ids: Accepted so tokenizer outputs can be passed as ``**batch``; ignored.
            inputs_embeds: ``(batch, seq, embedding_size)`` instead of ``input_ids``.
            labels: ``(batch,)`` class ids; adds ``loss``.
            return_dict: Return a tuple when ``False``.
            output_attentions: Accepted as ``None``/``False`` (what peft and the pipelines pass); ``True`` is refused.
            output_hidden_states: Accepted as ``None``/``False``; ``True`` is refused.
            **unsupported: Any other keyword is refused with a ``TypeError`` naming it.
        """
        self.check_forward_options(output_attentions, output_hidden_states, unsupported)
        lengths, _, _ = self._prepare_inputs(input_ids, attention_mask, inputs_embeds, labels)
        inputs = self._embed(input_ids, inputs_embeds)
        zeros = torch.zeros_like(lengths)
        penalty = None
        if self.config.reading_policy == "full":
            last = self._read_all(inputs, lengths)
            read, skimmed, decisions = lengths, zeros, zeros
        elif self.training:
            last, skimmed, penalty = self._forward_gumbel(inputs, lengths)
            read, decisions = lengths - skimmed, lengths
        else:
            last, skimmed = self._forward_skim(inputs, lengths)
            read, decisions = lengths - skimmed, lengths
        logits = self._classify(last)
        loss = self._cross_entropy(logits, labels)
        if loss is not None and penalty is not None and self.config.skim_penalty > 0:
            loss = loss + self.config.skim_penalty * penalty
        output = ReaderSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            tokens_read=read,
            tokens_skimmed=skimmed,
            tokens_jumped=zeros,
            num_decisions=decisions,
            num_jumps=zeros,
        )
        return output.to_tuple() if return_dict is False else output

    def _forward_gumbel(self, inputs: torch.Tensor, lengths: torch.Tensor):
        """Training: both cells at every token, mixed by a straight-through Gumbel-softmax sample of the gate."""
        config = self.config
        batch_size, small = inputs.size(0), config.small_hidden_size
        h = inputs.new_zeros(batch_size, config.hidden_size)
        c = inputs.new_zeros(batch_size, config.hidden_size)
        skimmed = torch.zeros_like(lengths)
        neg_log_skim = inputs.new_zeros(())
        steps = int(lengths.max())
        for t in range(steps):
            x = inputs[:, t]
            gate_logits = self.skim_gate(torch.cat([x, h], dim=1))
            choice = F.gumbel_softmax(gate_logits, tau=config.gumbel_temperature, hard=True)
            h_big, c_big = self.big_cell(x, (h, c))
            h_small, c_small = self.small_cell(x, h, c)
            h_skim = torch.cat([h_small, h[:, small:]], dim=1)
            c_skim = torch.cat([c_small, c[:, small:]], dim=1)
            read_w, skim_w = choice[:, :1], choice[:, 1:]
            # Padding leaves the state unchanged (training may compute and mask; eval never does).
            valid = (t < lengths).unsqueeze(1)
            h = torch.where(valid, read_w * h_big + skim_w * h_skim, h)
            c = torch.where(valid, read_w * c_big + skim_w * c_skim, c)
            skimmed = skimmed + (valid.squeeze(1) & (choice[:, 1] > 0.5)).long()
            neg_log_skim = neg_log_skim - (F.log_softmax(gate_logits, dim=-1)[:, 1] * valid.squeeze(1)).sum()
        penalty = neg_log_skim / lengths.sum().clamp(min=1)
        return h, skimmed, penalty

    def _skim_parameters(self) -> SkimInference:
        """The skim path's weights rearranged for inference (cached until a parameter changes)."""
        config, cell, gate = self.config, self.small_cell, self.skim_gate
        embed, small = config.embedding_size, config.small_hidden_size
        sources = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, gate.weight, gate.bias)

        def build() -> SkimInference:
            # One product gives the small cell's gates and the gate's score (logit(skim) - logit(read)), split by
            # what they read: x_t (all tokens at once), the head h[:small] (every step), the tail h[small:]
            # (only after a read, since skimming leaves it unchanged).
            score_w = gate.weight[1] - gate.weight[0]
            w_x = torch.cat([cell.weight_ih[:, :embed], score_w[None, :embed]])
            w_head = torch.cat([cell.weight_hh, score_w[None, embed : embed + small]])
            w_tail = torch.cat([cell.weight_ih[:, embed:], score_w[None, embed + small :]])
            bias = torch.cat([cell.bias_ih + cell.bias_hh, (gate.bias[1] - gate.bias[0])[None]])
            return SkimInference(
                tokens=InferenceLinear(w_x, bias),
                head_t=w_head.t().contiguous(),
                tail_t=w_tail.t().contiguous(),
            )

        return self.inference_cache("skim", sources, build)

    def _forward_skim(self, inputs: torch.Tensor, lengths: torch.Tensor):
        """Eval: the big cell runs only on the tokens that are read, the small cell only on those that are skimmed.

        Inference only (in ``torch.inference_mode``; no autograd graph). The state is a head (the
        ``small_hidden_size`` dims the small cell writes) and a tail. The decision and the small cell's gates come
        from one product: its input term for every token up front (one matmul), its head term at every step (a
        ``small x (4 small + 1)`` matmul), its tail term once after each read (skimming leaves the tail as it is).
        Each row runs at its own position: the skimming rows step together, each on its own next token; rows
        that want to read wait until half the active rows do, then read their tokens with the big cell together
        (``_skim_rows``), so the big cell runs on many rows at once.
        """
        config = self.config
        threshold = float(config.skim_threshold)
        # P(skim) >= threshold  <=>  logit(skim) - logit(read) >= log(threshold / (1 - threshold)).
        if threshold <= 0.0:
            cut = -math.inf
        elif threshold >= 1.0:
            cut = math.inf
        else:
            cut = math.log(threshold / (1.0 - threshold))
        batch_size = inputs.size(0)
        steps = int(lengths.max()) if batch_size else 0
        if steps == 0:
            return inputs.new_zeros(batch_size, config.hidden_size), torch.zeros_like(lengths)
        params, big = self._skim_parameters(), self.fast_lstm()
        with torch.inference_mode():
            if batch_size == 1:
                last, skimmed = self._skim_one_row(inputs[0], int(lengths[0]), cut, params, big)
            else:
                last, skimmed = self._skim_rows(inputs[:, :steps], lengths, cut, params, big)
        return last.clone(), skimmed.clone()  # normal tensors again, usable outside inference mode

    def _skim_one_row(self, inputs: torch.Tensor, length: int, cut: float, params: SkimInference, big: FastLstm):
        """One row: decisions on Python floats, every update in place in preallocated buffers."""
        config = self.config
        embed, hidden, small = config.embedding_size, config.hidden_size, config.small_hidden_size
        gates = 4 * small
        inputs = inputs[:length]
        base = params.tokens(inputs)  # (length, 4 small + 1): input terms of every token
        terms = base.clone()  # plus the current tail term
        rows = terms.unbind(0)
        xh = inputs.new_zeros(1, embed + hidden)  # [x_t; h]: the big cell's input, h lives in it
        h = xh[:, embed:]
        h_head, h_tail = h[:, :small], h[:, small:]
        c = inputs.new_zeros(1, hidden)
        c_head = c[:, :small]
        z = inputs.new_empty(1, gates + 1)
        views, score, scratch = _gate_views(z, small), z[0, gates], inputs.new_empty(1, small)
        head_t = params.head_t
        skimmed = 0
        for t in range(length):
            torch.addmm(rows[t], h_head, head_t, out=z)
            if score.item() >= cut:
                _small_update(views, c_head, h_head, scratch)
                skimmed += 1
                continue
            xh[:, :embed].copy_(inputs[t : t + 1])
            _big_update(big.joint(xh), c, h)
            if t + 1 < length:
                torch.add(base[t + 1 :], torch.mm(h_tail, params.tail_t), out=terms[t + 1 :])
        return h, torch.full((1,), skimmed, dtype=torch.long, device=inputs.device)

    def _skim_rows(self, inputs, lengths, cut: float, params: SkimInference, big: FastLstm):
        """A batch: each row at its own position.

        The rows that skim form a working set stepped together, each on its own next token. A row that wants to
        read leaves it for a pool; once half the active rows wait in the pool (or none is left skimming), the
        pool reads its tokens with the big cell in one product and those rows rejoin the working set. So the big
        cell runs on many rows at once while the working set stays large (few, wide steps).
        """
        config = self.config
        batch_size, steps = inputs.size(0), inputs.size(1)
        hidden, small = config.hidden_size, config.small_hidden_size
        flat_inputs = inputs.reshape(batch_size * steps, -1)
        # Input terms of every token; padding positions are projected too (one product beats a gather here).
        base = params.tokens(flat_inputs)
        h = inputs.new_zeros(batch_size, hidden)
        c = torch.zeros_like(h)
        skimmed = torch.zeros_like(lengths)
        rows = (lengths > 0).nonzero().squeeze(1)
        start = rows * steps
        # The working set: global rows; flat index of each row's next token, where its tokens end and where it
        # joined (for its skim count); the tail terms of its state (the initial state is zero), its head state.
        work = _WorkingSet(
            rows,
            start.clone(),
            start + lengths.index_select(0, rows),
            start,
            inputs.new_zeros(rows.numel(), 4 * small + 1),
            inputs.new_zeros(rows.numel(), small),
            inputs.new_zeros(rows.numel(), small),
        )
        pool, pooled = [], 0  # rows waiting to read their next token: (rows, positions, ends)
        while True:
            if pooled and (work.size == 0 or 2 * pooled >= work.size + pooled):
                # ---------------------------------------------------------------- read round
                rows, position, end = (torch.cat(parts) for parts in zip(*pool, strict=True))
                pool, pooled = [], 0
                h_rows, c_rows = _read_rows(flat_inputs.index_select(0, position), h, c, rows, big)
                h.index_copy_(0, rows, h_rows)
                c.index_copy_(0, rows, c_rows)
                position = position + 1
                more = position < end
                if not bool(more.all()):
                    keep = more.nonzero().squeeze(1)
                    rows, position, end, h_rows, c_rows = (
                        t.index_select(0, keep) for t in (rows, position, end, h_rows, c_rows)
                    )
                if rows.numel():
                    tail = torch.mm(h_rows[:, small:], params.tail_t)
                    work.join(rows, position, end, tail, h_rows[:, :small], c_rows[:, :small])
            if work.size == 0:
                if pooled:
                    continue
                break
            # -------------------------------------------------------------------- skim step of the working set
            z = work.decide(base, params.head_t)
            if float(z[:, 4 * small].min()) < cut:
                read = z[:, 4 * small] < cut
                out = read.nonzero().squeeze(1)
                pool.append(work.leave(out, read, h, c, skimmed, small))
                pooled += out.numel()
                if work.size == 0:
                    continue
                z = work.z
            _small_update(work.views, work.c_head, work.h_head, work.scratch)
            work.advance()
            if work.until_end == 0:  # rows whose last token this was
                ended = work.position == work.end
                work.leave(ended.nonzero().squeeze(1), ended, h, c, skimmed, small)
        return h, skimmed


class _WorkingSet:
    """The rows of a Skim-RNN batch that are skimming, with their per-row state (see ``_skim_rows``).

    Per-row integers live in one ``(n, 4)`` tensor (global row, flat index of the next token, end, flat index at
    joining) and per-row floats in one ``(n, 4 small + 1 + 2 small)`` tensor (tail terms, head h, head c), so that
    rows leaving or joining cost a few gathers, not one per field.
    """

    def __init__(self, rows, position, end, joined, tail, h_head, c_head):
        self.meta = torch.stack([rows, position, end, joined], 1)
        self.state = torch.cat([tail, h_head, c_head], 1)
        self.width, self.small = tail.size(1), h_head.size(1)
        self._refresh()

    @property
    def size(self) -> int:
        return self.meta.size(0)

    def _refresh(self, z: torch.Tensor | None = None) -> None:
        """Views and buffers for the current rows (after they changed), made once and reused at every step."""
        n, width, small = self.meta.size(0), self.width, self.small
        self.rows, self.position, self.end, self.joined = self.meta.unbind(1)  # views: position advances in place
        self.tail = self.state[:, :width]
        self.h_head = self.state[:, width : width + small]
        self.c_head = self.state[:, width + small :]
        self.z = self.state.new_empty(n, width) if z is None else z
        self.views, self.scratch = _gate_views(self.z, small), self.state.new_empty(n, small)
        self.until_end = int((self.end - self.position).min()) if n else 0

    def decide(self, base: torch.Tensor, head_t: torch.Tensor) -> torch.Tensor:
        """The decision product of every row's next token: its skim score and small-cell gates, into ``z``."""
        torch.index_select(base, 0, self.position, out=self.z)
        return self.z.add_(self.tail).addmm_(self.h_head, head_t)

    def advance(self) -> None:
        self.position.add_(1)
        self.until_end -= 1

    def leave(self, out, leaving, h, c, skimmed, small):
        """Rows ``out`` leave: their head state and skim count go back to the batch's buffers. Returns their
        ``(rows, positions, ends)``; the set keeps the other rows (and their rows of ``z``)."""
        meta, state = self.meta.index_select(0, out), self.state.index_select(0, out)
        rows, position, end, joined = meta.unbind(1)
        width = self.width
        h[:, :small].index_copy_(0, rows, state[:, width : width + small])
        c[:, :small].index_copy_(0, rows, state[:, width + small :])
        skimmed.index_add_(0, rows, position - joined)
        keep = (~leaving).nonzero().squeeze(1)
        self.meta, self.state = self.meta.index_select(0, keep), self.state.index_select(0, keep)
        self._refresh(self.z.index_select(0, keep))
        return rows, position, end

    def join(self, rows, position, end, tail, h_head, c_head) -> None:
        """Rows that just read a token join, at their next token."""
        self.meta = torch.cat([self.meta, torch.stack([rows, position, end, position], 1)])
        self.state = torch.cat([self.state, torch.cat([tail, h_head, c_head], 1)])
        self._refresh()


@dataclass
class SkimInference:
    """Skim-RNN's small cell and gate rearranged for inference (see ``_skim_parameters``).

    Args:
        tokens: ``x_t ->`` the input terms (and biases) of the small cell's gates and of the skim score.
        head_t: ``(small, 4 small + 1)``: the head's terms, transposed.
        tail_t: ``(hidden - small, 4 small + 1)``: the tail's terms, transposed.
    """

    tokens: InferenceLinear
    head_t: torch.Tensor
    tail_t: torch.Tensor


def _gate_views(z: torch.Tensor, small: int) -> tuple[torch.Tensor, ...]:
    """Views of the small cell's gates in the decision product's output ``z``: all, i, f, g, o (made once, reused
    at every step, since creating views costs about as much as the elementwise ops on these small tensors)."""
    return (
        z[:, : 4 * small],
        z[:, :small],
        z[:, small : 2 * small],
        z[:, 2 * small : 3 * small],
        z[:, 3 * small : 4 * small],
    )


def _small_update(views: tuple[torch.Tensor, ...], c_head: torch.Tensor, h_head: torch.Tensor, scratch) -> None:
    """A skim step on the rows of ``views`` (:func:`_gate_views`): the small cell's update of the head, in place."""
    gates, i, f, g, o = views
    torch.tanh(g, out=scratch)
    gates.sigmoid_()
    c_head.mul_(f).addcmul_(i, scratch)
    torch.tanh(c_head, out=scratch)
    torch.mul(o, scratch, out=h_head)


def _big_update(gates: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> None:
    """A read step (one row): the big cell's elementwise update of the whole state, in place."""
    lstm_update_(gates, c, h)


def _read_rows(tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor, rows: torch.Tensor, big: FastLstm):
    """Reads one token for each row in ``rows`` with the big cell; returns their new ``(h, c)``."""
    h_rows = h.index_select(0, rows)
    c_rows = c.index_select(0, rows)
    gates = big.joint(torch.cat([tokens, h_rows], 1))
    lstm_update_(gates, c_rows, h_rows)
    return h_rows, c_rows
