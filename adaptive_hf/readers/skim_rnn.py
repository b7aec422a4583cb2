"""Skim-RNN (Seo et al., ICLR 2018) as a Hugging Face sequence classifier.

At each token a gate looks at ``[x_t; h_{t-1}]`` and chooses to *read* (the big LSTM cell updates the whole state)
or to *skim* (a small LSTM cell updates only the first ``small_hidden_size`` dimensions; the rest is copied).

* Training: both cells run at every token; a straight-through Gumbel-softmax sample picks one, so the gate gets
  gradients; the loss adds ``skim_penalty * mean(-log P(skim))``.
* Eval (``reading_policy="adaptive"``): real skipping. Rows are sorted by length once, so the rows still reading at
  step ``t`` are a prefix of the batch; the gate runs on them, the rows that read go through the big cell only and
  the rows that skim through the small cell only (each on its own gathered rows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import SkimRnnConfig
from .modeling import ReaderPreTrainedModel, ReaderSequenceClassifierOutput, linear_flops, lstm_cell_flops


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
        # Every token: the gate on [x_t; h_{t-1}] and the small cell's input term (computed for all tokens at once).
        return linear_flops(1, config.embedding_size + config.hidden_size, 2) + linear_flops(
            1, config.embedding_size, 4 * config.small_hidden_size
        )

    def skim_flops(self) -> int:
        config = self.config
        # A skimmed token: the small cell's recurrent term on the head of the state.
        return linear_flops(1, config.small_hidden_size, 4 * config.small_hidden_size)

    def adaptive_read_flops(self) -> int:
        config = self.config
        # After a read, the new tail's terms in the small cell and the gate are computed once and cached.
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
    ) -> ReaderSequenceClassifierOutput | tuple:
        """Classifies a batch of right-padded token sequences, skimming tokens in eval mode.

        Args:
            input_ids: ``(batch, seq)`` token ids of any HF tokenizer matching ``config.vocab_size``.
            attention_mask: ``(batch, seq)`` right-padded mask (1 = token); ``None`` means no padding.
            token_type_ids: Accepted so tokenizer outputs can be passed as ``**batch``; ignored.
            inputs_embeds: ``(batch, seq, embedding_size)`` instead of ``input_ids``.
            labels: ``(batch,)`` class ids; adds ``loss``.
            return_dict: Return a tuple when ``False``.
        """
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

    def _forward_skim(self, inputs: torch.Tensor, lengths: torch.Tensor):
        """Eval: per step, the big cell runs only on the rows that read and the small cell only on those that skim.

        The state is kept as a head (the ``small_hidden_size`` dims the small cell writes) and a tail. The tail only
        changes when a row reads, so its contributions to the gate and to the small cell are computed then and
        cached; a skim step is one small matmul on the head. The gate's and the small cell's input terms for every
        token are one matmul each up front (counted in :meth:`decision_flops`).
        """
        config = self.config
        batch_size, small, embed = inputs.size(0), config.small_hidden_size, config.embedding_size
        threshold = float(config.skim_threshold)
        # P(skim) >= threshold  <=>  logit(skim) - logit(read) >= log(threshold / (1 - threshold)).
        if threshold <= 0.0:
            cut = -math.inf
        elif threshold >= 1.0:
            cut = math.inf
        else:
            cut = math.log(threshold / (1.0 - threshold))
        gate_weight = self.skim_gate.weight[1] - self.skim_gate.weight[0]
        gate_bias = self.skim_gate.bias[1] - self.skim_gate.bias[0]
        gate_w_x, gate_w_head, gate_w_tail = (
            gate_weight[:embed],
            gate_weight[embed : embed + small],
            gate_weight[embed + small :],
        )
        cell = self.small_cell
        small_w_x, small_w_tail = cell.weight_ih[:, :embed], cell.weight_ih[:, embed:]
        small_w_head = cell.weight_hh.t()

        order = torch.argsort(lengths, descending=True, stable=True)
        if batch_size > 1:
            inputs, lengths = inputs.index_select(0, order), lengths.index_select(0, order)
        steps = int(lengths[0]) if batch_size > 0 else 0
        inputs = inputs[:, :steps]
        flat = inputs.reshape(-1, embed)
        gate_x = torch.mv(flat, gate_w_x).view(batch_size, steps) + gate_bias
        small_x = F.linear(flat, small_w_x, cell.bias_ih + cell.bias_hh).view(batch_size, steps, 4 * small)
        active_counts = (lengths.unsqueeze(0) > torch.arange(steps, device=lengths.device).unsqueeze(1)).sum(1)
        active_counts = active_counts.tolist()
        h_head = inputs.new_zeros(batch_size, small)
        c_head = torch.zeros_like(h_head)
        h_tail = inputs.new_zeros(batch_size, config.hidden_size - small)
        c_tail = torch.zeros_like(h_tail)
        tail_small = inputs.new_zeros(batch_size, 4 * small)  # the tail's term in the small cell's gates
        tail_gate = inputs.new_zeros(batch_size)  # the tail's term in the skim gate
        last = inputs.new_zeros(batch_size, config.hidden_size)
        skimmed = torch.zeros_like(lengths)
        alive = batch_size
        # One row: decide with Python floats, which saves several tensor ops per token.
        single = batch_size == 1
        gate_x_values = gate_x[0].tolist() if single else None
        tail_gate_value = 0.0
        skimmed_single = 0
        for t in range(steps):
            n = active_counts[t]
            if n < alive:
                # Rows [n, alive) ended at step t: keep their final state and drop them from the batch.
                last[n:alive] = torch.cat([h_head[n:], h_tail[n:]], dim=1)
                h_head, c_head, h_tail, c_tail = h_head[:n], c_head[:n], h_tail[:n], c_tail[:n]
                tail_small, tail_gate, alive = tail_small[:n], tail_gate[:n], n
            if single:
                score = float(torch.dot(h_head[0], gate_w_head)) + tail_gate_value + gate_x_values[t]
                num_skim = 1 if score >= cut else 0
            else:
                skim = (torch.mv(h_head, gate_w_head) + tail_gate + gate_x[:n, t]) >= cut
                num_skim = int(skim.sum())
            if num_skim == n:
                h_head, c_head = _small_step(small_x[:n, t] + tail_small, h_head, c_head, small_w_head)
                if single:
                    skimmed_single += 1
                else:
                    skimmed[:n] += 1
                continue
            if num_skim == 0:
                h, c = self.big_cell(inputs[:n, t], (torch.cat([h_head, h_tail], 1), torch.cat([c_head, c_tail], 1)))
                h_head, h_tail, c_head, c_tail = h[:, :small], h[:, small:], c[:, :small], c[:, small:]
                tail_small = F.linear(h_tail, small_w_tail)
                if single:
                    tail_gate_value = float(torch.dot(h_tail[0], gate_w_tail))
                else:
                    tail_gate = torch.mv(h_tail, gate_w_tail)
                continue
            skimmed[:n] += skim
            read_rows = (~skim).nonzero().squeeze(1)
            skim_rows = skim.nonzero().squeeze(1)
            h_small, c_small = _small_step(
                small_x[:n, t].index_select(0, skim_rows) + tail_small.index_select(0, skim_rows),
                h_head.index_select(0, skim_rows),
                c_head.index_select(0, skim_rows),
                small_w_head,
            )
            h_read = torch.cat([h_head.index_select(0, read_rows), h_tail.index_select(0, read_rows)], 1)
            c_read = torch.cat([c_head.index_select(0, read_rows), c_tail.index_select(0, read_rows)], 1)
            h_big, c_big = self.big_cell(inputs[:n, t].index_select(0, read_rows), (h_read, c_read))
            h_head = h_head.index_copy(0, skim_rows, h_small).index_copy(0, read_rows, h_big[:, :small])
            c_head = c_head.index_copy(0, skim_rows, c_small).index_copy(0, read_rows, c_big[:, :small])
            h_tail = h_tail.index_copy(0, read_rows, h_big[:, small:])
            c_tail = c_tail.index_copy(0, read_rows, c_big[:, small:])
            tail_small = tail_small.index_copy(0, read_rows, F.linear(h_big[:, small:], small_w_tail))
            tail_gate = tail_gate.index_copy(0, read_rows, torch.mv(h_big[:, small:], gate_w_tail))
        if alive > 0:
            last[:alive] = torch.cat([h_head, h_tail], dim=1)
        if single:
            skimmed.fill_(skimmed_single)
        if batch_size > 1:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(batch_size, device=order.device)
            last, skimmed = last.index_select(0, inverse), skimmed.index_select(0, inverse)
        return last, skimmed


def _small_step(input_terms: torch.Tensor, h_head: torch.Tensor, c_head: torch.Tensor, w_head_t: torch.Tensor):
    """One small-cell LSTM step on the head of the state, given the gates' input and tail terms."""
    small = h_head.size(1)
    gates = torch.addmm(input_terms, h_head, w_head_t)
    activated = gates.sigmoid()
    candidate = gates[:, 2 * small : 3 * small].tanh()
    c_head = torch.addcmul(activated[:, small : 2 * small] * c_head, activated[:, :small], candidate)
    return activated[:, 3 * small :] * c_head.tanh(), c_head
