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
        return linear_flops(1, config.embedding_size + config.hidden_size, 2)

    def skim_flops(self) -> int:
        config = self.config
        # The small cell reads x_t and the whole previous state and writes small_hidden_size dims.
        return linear_flops(1, config.embedding_size + config.hidden_size, 4 * config.small_hidden_size)

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
        """Eval: per step, the big cell runs only on the rows that read and the small cell only on those that skim."""
        config = self.config
        batch_size, small = inputs.size(0), config.small_hidden_size
        threshold = float(config.skim_threshold)
        # P(skim) >= threshold  <=>  logit(skim) - logit(read) >= log(threshold / (1 - threshold)).
        if threshold <= 0.0:
            cut = -math.inf
        elif threshold >= 1.0:
            cut = math.inf
        else:
            cut = math.log(threshold / (1.0 - threshold))
        weight = self.skim_gate.weight[1] - self.skim_gate.weight[0]
        bias = self.skim_gate.bias[1] - self.skim_gate.bias[0]
        w_x, w_h = weight[: config.embedding_size], weight[config.embedding_size :]

        order = torch.argsort(lengths, descending=True, stable=True)
        if batch_size > 1:
            inputs, lengths = inputs.index_select(0, order), lengths.index_select(0, order)
        # The gate's input term for every token at once: 2 * embedding_size FLOPs per token, as counted.
        gate_x = torch.mv(inputs.reshape(-1, inputs.size(2)), w_x).view(batch_size, -1) + bias
        steps = int(lengths[0]) if batch_size > 0 else 0
        active_counts = (lengths.unsqueeze(0) > torch.arange(steps, device=lengths.device).unsqueeze(1)).sum(1)
        active_counts = active_counts.tolist()
        h = inputs.new_zeros(batch_size, config.hidden_size)
        c = inputs.new_zeros(batch_size, config.hidden_size)
        last = inputs.new_zeros(batch_size, config.hidden_size)
        skimmed = torch.zeros_like(lengths)
        rows_alive = batch_size
        for t in range(steps):
            n = active_counts[t]
            if n < rows_alive:
                # Rows [n, rows_alive) ended at step t: keep their final state and drop them from the batch.
                last[n:rows_alive] = h[n:]
                h, c = h[:n], c[:n]
                rows_alive = n
            x = inputs[:n, t]
            skim = (gate_x[:n, t] + torch.mv(h, w_h)) >= cut
            num_skim = int(skim.sum())
            if num_skim == 0:
                h, c = self.big_cell(x, (h, c))
                continue
            skimmed[:n] += skim
            if num_skim == n:
                h_small, c_small = self.small_cell(x, h, c)
                h = torch.cat([h_small, h[:, small:]], dim=1)
                c = torch.cat([c_small, c[:, small:]], dim=1)
                continue
            read_rows = (~skim).nonzero().squeeze(1)
            skim_rows = skim.nonzero().squeeze(1)
            h_read, c_read = h.index_select(0, read_rows), c.index_select(0, read_rows)
            h_skim, c_skim = h.index_select(0, skim_rows), c.index_select(0, skim_rows)
            h_big, c_big = self.big_cell(x.index_select(0, read_rows), (h_read, c_read))
            h_small, c_small = self.small_cell(x.index_select(0, skim_rows), h_skim, c_skim)
            h_skim = torch.cat([h_small, h_skim[:, small:]], dim=1)
            c_skim = torch.cat([c_small, c_skim[:, small:]], dim=1)
            h = h.index_copy(0, read_rows, h_big).index_copy(0, skim_rows, h_skim)
            c = c.index_copy(0, read_rows, c_big).index_copy(0, skim_rows, c_skim)
        if rows_alive > 0:
            last[:rows_alive] = h
        if batch_size > 1:
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(batch_size, device=order.device)
            last, skimmed = last.index_select(0, inverse), skimmed.index_select(0, inverse)
        return last, skimmed
