"""LSTM-Jump (Yu et al., ACL 2017) as a Hugging Face sequence classifier.

The reader reads ``read_tokens`` tokens, then its jump policy (softmax over ``max_jump + 2`` actions: stop, or skip
0..``max_jump`` tokens) decides where to read next. After ``max_jumps`` jumps it reads one last chunk and stops; it
also stops at the end of its sequence. The last state is classified.

Each row keeps its own position pointer. A reading round gathers, for the rows that are still reading, the
``read_tokens``-token chunk at their own position, and runs the fused LSTM on those rows and tokens only: tokens
that are jumped over, and rows that stopped or reached their end, are never computed. There are at most
``max_jumps + 1`` rounds.

* Training: jumps are sampled; REINFORCE with a learned baseline (reward +1 for a correct prediction, -1 otherwise,
  or ``2 * p(label) - 1`` with ``reward="probability"``; minus ``read_penalty`` x fraction read) adds
  ``policy_loss_coef * policy term + baseline_loss_coef * baseline MSE - entropy_coef * entropy`` (each a mean over
  the sampled decisions) to the cross-entropy in ``loss``, so the stock ``Trainer`` trains the policy. With
  ``full_reading_loss_coef > 0`` the loss also holds that weight times the cross-entropy of the same batch read in
  full.
* Eval: greedy (argmax) decisions; ``stop_threshold`` (a runtime knob) makes the reader stop only when the
  policy's probability of stopping reaches it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import JumpLstmConfig
from .modeling import (
    ReaderPreTrainedModel,
    ReaderSequenceClassifierOutput,
    greedy_jump_actions,
    linear_flops,
    lstm_steps,
)
from .streaming import read_stream


class JumpLstmForSequenceClassification(ReaderPreTrainedModel):
    """LSTM-Jump text classifier: read a chunk, then jump, or stop.

    Args:
        config: A :class:`JumpLstmConfig`.
    """

    config_class = JumpLstmConfig

    def __init__(self, config: JumpLstmConfig):
        super().__init__(config)
        self._build_common(config)
        # Action 0 = stop, action k >= 1 = skip k - 1 tokens, then read the next chunk.
        self.jump_policy = nn.Linear(config.hidden_size, config.max_jump + 2)
        self.baseline = nn.Linear(config.hidden_size, 1)
        self.post_init()

    # ------------------------------------------------------------------------------------------------ cost model
    def decision_flops(self) -> int:
        return linear_flops(1, self.config.hidden_size, self.config.max_jump + 2)

    def card_rows(self):
        config = self.config
        return super().card_rows() + [
            ("read_tokens", config.read_tokens),
            ("max_jump", config.max_jump),
            ("max_jumps", config.max_jumps),
            ("stop_threshold", config.stop_threshold),
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
        """Classifies a batch of right-padded token sequences, jumping over tokens.

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
        zeros = torch.zeros_like(lengths)
        trace = None
        if self.config.reading_policy == "full":
            last = self._read_all(self._embed(input_ids, inputs_embeds), lengths)
            read, decisions, jumps = lengths, zeros, zeros
        elif self.training:
            last, read, decisions, jumps, trace = self._forward_jump(input_ids, inputs_embeds, lengths)
        else:
            # Eval: greedy jumps, inference only (prepacked weights, in-place updates, no autograd graph).
            fast = self.fast_lstm()
            with torch.inference_mode():
                if lengths.size(0) == 1:
                    last, read, decisions, jumps = self._jump_one_row(input_ids, inputs_embeds, int(lengths[0]), fast)
                else:
                    last, read, decisions, jumps, _ = self._forward_jump(input_ids, inputs_embeds, lengths, fast)
            last, read, decisions, jumps = (t.clone() for t in (last, read, decisions, jumps))
        logits = self._classify(last)
        loss = self._cross_entropy(logits, labels)
        if loss is not None and trace is not None:
            loss = loss + self._reinforce_loss(trace, logits, labels, read, lengths)
            if self.config.full_reading_loss_coef > 0:
                full_logits = self._classify(self._read_all(self._embed(input_ids, inputs_embeds), lengths))
                loss = loss + self.config.full_reading_loss_coef * self._cross_entropy(full_logits, labels)
        output = ReaderSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            tokens_read=read,
            tokens_skimmed=zeros,
            tokens_jumped=lengths - read,
            num_decisions=decisions,
            num_jumps=jumps,
        )
        return output.to_tuple() if return_dict is False else output

    def classify_stream(self, batches, pool_rows: int | None = None):
        """Eval-mode reading of many batches with continuous batching: finished rows are replaced at once.

        Each row gets the logits and counts that ``model(**batch)`` gives it, but every round runs on about
        ``pool_rows`` rows instead of the few of one batch that are still reading. See
        :func:`adaptive_hf.readers.streaming.read_stream`.

        Args:
            batches: Iterable of tokenizer outputs (``input_ids``, right-padded ``attention_mask``).
            pool_rows: Rows read together (default: the first batch's size).

        Yields:
            One output per input batch, in input order.
        """
        return read_stream(self, batches, pool_rows)

    def _gather_chunk(self, input_ids, inputs_embeds, rows, start, steps):
        """Embeddings of ``steps`` tokens from ``start`` for each row in ``rows`` (positions past the end clamp)."""
        seq_len = (input_ids if input_ids is not None else inputs_embeds).size(1)
        positions = (start.unsqueeze(1) + torch.arange(steps, device=start.device)).clamp(max=seq_len - 1)
        if input_ids is not None:
            return self.embeddings(input_ids.index_select(0, rows).gather(1, positions))
        embeds = inputs_embeds.index_select(0, rows)
        return embeds.gather(1, positions.unsqueeze(2).expand(-1, -1, embeds.size(2)))

    def _jump_one_row(self, input_ids, inputs_embeds, length: int, fast):
        """Eval on one row: the same reading as :meth:`_forward_jump`, with the bookkeeping in Python integers."""
        config = self.config
        device = (input_ids if input_ids is not None else inputs_embeds).device
        dtype = self.big_cell.weight_ih.dtype if inputs_embeds is None else inputs_embeds.dtype
        h = torch.zeros(1, config.hidden_size, device=device, dtype=dtype)
        c = torch.zeros_like(h)
        position = read = decisions = jumps = 0
        for round_index in range(config.max_jumps + 1):
            if position >= length:
                break
            steps = min(config.read_tokens, length - position)
            if input_ids is not None:
                inputs = self.embeddings(input_ids[:, position : position + steps])
            else:
                inputs = inputs_embeds[:, position : position + steps]
            h, c = lstm_steps(inputs, None, (h, c), self.big_cell, fast)
            position += steps
            read += steps
            if round_index == config.max_jumps or position >= length:
                break
            policy_logits = self.jump_policy(h)
            scores = policy_logits[0].tolist()
            action = max(range(len(scores)), key=scores.__getitem__)  # the first maximum, as argmax
            if action == 0 and config.stop_threshold > 0:  # the rare stop: the batched path's tensor check
                action = int(greedy_jump_actions(policy_logits, config.stop_threshold)[0])
            decisions += 1
            if action == 0:
                break
            position += action - 1
            jumps += 1
        counts = torch.tensor([[read], [decisions], [jumps]], device=device)
        return h, counts[0], counts[1], counts[2]

    def _forward_jump(self, input_ids, inputs_embeds, lengths, fast=None):
        config = self.config
        sample = self.training
        batch_size, hidden, chunk = lengths.size(0), config.hidden_size, config.read_tokens
        device = lengths.device
        dtype = self.big_cell.weight_ih.dtype if inputs_embeds is None else inputs_embeds.dtype
        h = torch.zeros(batch_size, hidden, device=device, dtype=dtype)
        c = torch.zeros_like(h)
        position = torch.zeros_like(lengths)
        read = torch.zeros_like(lengths)
        decisions = torch.zeros_like(lengths)
        jumps = torch.zeros_like(lengths)
        stopped = torch.zeros_like(lengths, dtype=torch.bool)
        trace = [] if sample else None
        for round_index in range(config.max_jumps + 1):
            active = ~stopped & (position < lengths)
            rows = active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            start = position.index_select(0, rows)
            steps = (lengths.index_select(0, rows) - start).clamp(max=chunk)
            width = int(steps.max())
            inputs = self._gather_chunk(input_ids, inputs_embeds, rows, start, width)
            h_rows, c_rows = lstm_steps(
                inputs, steps, (h.index_select(0, rows), c.index_select(0, rows)), self.big_cell, fast
            )
            h = h.index_copy(0, rows, h_rows)
            c = c.index_copy(0, rows, c_rows)
            position.index_add_(0, rows, steps)
            read.index_add_(0, rows, steps)
            if round_index == config.max_jumps:
                break
            # Rows that reached their end stop without a decision.
            undecided = position.index_select(0, rows) < lengths.index_select(0, rows)
            if not bool(undecided.any()):
                break
            local = undecided.nonzero().squeeze(1)
            deciding = rows.index_select(0, local)
            state = h_rows.index_select(0, local)
            if sample and not config.policy_gradient_to_reader:
                state = state.detach()
            policy_logits = self.jump_policy(state)
            if sample:
                log_probs = F.log_softmax(policy_logits, dim=-1)
                action = torch.multinomial(log_probs.exp(), 1).squeeze(1)
                trace.append(
                    (
                        deciding,
                        log_probs.gather(1, action.unsqueeze(1)).squeeze(1),
                        -(log_probs.exp() * log_probs).sum(-1),
                        self.baseline(state.detach()).squeeze(1),
                    )
                )
            else:
                action = greedy_jump_actions(policy_logits, config.stop_threshold)
            decisions.index_add_(0, deciding, torch.ones_like(deciding))
            stop = action == 0
            stopped.index_fill_(0, deciding[stop], True)
            go = ~stop
            jumping = deciding[go]
            jumps.index_add_(0, jumping, torch.ones_like(jumping))
            position.index_add_(0, jumping, action[go] - 1)
        return h, read, decisions, jumps, trace

    def _reinforce_loss(self, trace, logits, labels, read, lengths) -> torch.Tensor:
        """REINFORCE with a learned baseline, averaged over the sampled jump decisions of the batch.

        The reward of a row is +1 for a correct prediction and -1 otherwise (``reward="accuracy"``), or
        ``2 * p(label) - 1`` (``reward="probability"``), minus ``read_penalty`` times the fraction of its tokens
        that it read.
        """
        config = self.config
        if not trace:
            return logits.new_zeros(())
        if config.reward == "probability":
            reward = logits.detach().softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1) * 2 - 1
        else:
            reward = (logits.detach().argmax(-1) == labels).to(logits.dtype) * 2 - 1
        if config.read_penalty > 0:
            reward = reward - config.read_penalty * read.to(logits.dtype) / lengths.clamp(min=1).to(logits.dtype)
        rows = torch.cat([step[0] for step in trace])
        log_prob = torch.cat([step[1] for step in trace])
        entropy = torch.cat([step[2] for step in trace])
        value = torch.cat([step[3] for step in trace])
        returns = reward.index_select(0, rows)
        advantage = (returns - value).detach()
        policy = -(advantage * log_prob).mean()
        baseline = F.mse_loss(value, returns)
        return (
            config.policy_loss_coef * policy
            + config.baseline_loss_coef * baseline
            - config.entropy_coef * entropy.mean()
        )
