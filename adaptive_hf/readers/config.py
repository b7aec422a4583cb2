"""Configs of the skim/jump RNN text readers: :class:`SkimRnnConfig` and :class:`JumpLstmConfig`.

Both readers embed tokens (any HF tokenizer: ``vocab_size`` and ``pad_token_id`` come from the config), run an LSTM
over them and classify from the last hidden state. ``reading_policy`` switches between adaptive reading and the
full-compute reference that reads every token with the big LSTM.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from ..core.configuration import FrozenStructureMixin, check_choice, check_number, check_structure_unchanged

READING_POLICIES = ("adaptive", "full")
JUMP_REWARDS = ("accuracy", "probability")


def validate_reader_runtime(config) -> None:
    """Checks the runtime knobs that a user may change after loading; called at creation and at every forward.

    Args:
        config: A :class:`SkimRnnConfig` or :class:`JumpLstmConfig`.
    """
    check_structure_unchanged(config)
    check_choice("reading_policy", config.reading_policy, READING_POLICIES)
    if getattr(config, "model_type", None) == "skim_rnn":
        check_number("skim_threshold", config.skim_threshold, 0.0, 1.0)
    if getattr(config, "model_type", None) == "jump_lstm":
        check_number("stop_threshold", config.stop_threshold, 0.0, 1.0)


# Skim-RNN skims a token when the gate's skim probability exceeds the threshold: a higher threshold reads more.
SKIM_THRESHOLDS = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02)
# LSTM-Jump stops only when the stop probability reaches the threshold: a higher threshold reads more.
STOP_THRESHOLDS = (0.99, 0.98, 0.97, 0.95, 0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5, 0.0)


class ReaderConfigMixin(FrozenStructureMixin):
    """Validation shared by the reader configs (fields are declared on each config class).

    Shared fields:
        vocab_size: Size of the tokenizer's vocabulary.
        embedding_size: Width of the token embeddings (the LSTM input).
        hidden_size: Width of the (big) LSTM state.
        pad_token_id: Id of the padding token, or ``None``.
        classifier_dropout: Dropout on the final state before the classifier, in [0, 1).
        freeze_embeddings: Keep the token embeddings fixed in training (e.g. when copied from a pretrained model).
        reading_policy: ``"adaptive"`` (skim/jump) or ``"full"`` (read every token with the big LSTM: the
            full-compute reference). Read at every forward.
        initializer_range: Standard deviation of the normal init of embeddings and linear layers.
    """

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        self.validate_reader()

    def validate_reader(self) -> None:
        """Validates the shared fields; raises ``ValueError``/``TypeError`` naming the field and allowed values."""
        check_number("vocab_size", self.vocab_size, 1, None, integer=True)
        check_number("embedding_size", self.embedding_size, 1, None, integer=True)
        check_number("hidden_size", self.hidden_size, 1, None, integer=True)
        if self.pad_token_id is not None:
            check_number("pad_token_id", self.pad_token_id, 0, self.vocab_size - 1, integer=True)
        check_number("classifier_dropout", self.classifier_dropout, 0.0, 1.0, high_inclusive=False)
        if not isinstance(self.freeze_embeddings, bool):
            raise TypeError(f"`freeze_embeddings` must be True or False; got {self.freeze_embeddings!r}.")
        check_number("initializer_range", self.initializer_range, 0.0, None, low_inclusive=False)
        if self.num_labels < 2:
            raise ValueError(f"`num_labels` must be >= 2 for the reader classifiers; got {self.num_labels}.")
        if self.problem_type not in (None, "single_label_classification"):
            raise ValueError(
                f"`problem_type` must be None or 'single_label_classification' for the readers; got "
                f"{self.problem_type!r}."
            )
        validate_reader_runtime(self)


class SkimRnnConfig(ReaderConfigMixin, PreTrainedConfig):
    """Config of :class:`SkimRnnForSequenceClassification` (Seo et al., ICLR 2018).

    Args:
        vocab_size: Size of the tokenizer's vocabulary.
        embedding_size: Width of the token embeddings.
        hidden_size: Width ``d`` of the big LSTM state.
        small_hidden_size: Width ``d'`` (1 <= d' < d) of the small LSTM; skimming updates only the first ``d'``
            dimensions of the state.
        skim_threshold: Inference knob in [0, 1]: a token is skimmed when the gate's probability of skimming is
            >= this value (1.0 skims only at probability exactly 1; 0.0 skims every token). Read at every forward.
        gumbel_temperature: Temperature (> 0) of the straight-through Gumbel-softmax used in training.
        skim_penalty: Weight (>= 0) of the term ``mean(-log P(skim))`` added to the training loss, which pushes the
            gate towards skimming (the paper's gamma).
        pad_token_id: Id of the padding token, or ``None``.
        classifier_dropout: Dropout before the classifier, in [0, 1).
        freeze_embeddings: Keep the token embeddings fixed in training.
        reading_policy: ``"adaptive"`` or ``"full"`` (no skimming: every token goes through the big cell).
        initializer_range: Std of the normal init of embeddings and linear layers.
    """

    model_type = "skim_rnn"

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 128
    small_hidden_size: int = 8
    skim_threshold: float = 0.5
    gumbel_temperature: float = 1.0
    skim_penalty: float = 0.01
    pad_token_id: int | None = 0
    classifier_dropout: float = 0.1
    freeze_embeddings: bool = False
    reading_policy: str = "adaptive"
    initializer_range: float = 0.02

    def validate_reader(self) -> None:
        super().validate_reader()
        check_number("small_hidden_size", self.small_hidden_size, 1, self.hidden_size - 1, integer=True)
        check_number("gumbel_temperature", self.gumbel_temperature, 0.0, None, low_inclusive=False)
        check_number("skim_penalty", self.skim_penalty, 0.0, None)


class JumpLstmConfig(ReaderConfigMixin, PreTrainedConfig):
    """Config of :class:`JumpLstmForSequenceClassification` (Yu et al., ACL 2017).

    The reader reads ``read_tokens`` tokens, then its jump policy picks one of ``max_jump + 2`` actions: stop, or
    skip 0..``max_jump`` tokens and read the next chunk. After ``max_jumps`` jumps it reads one last chunk and
    stops; it also stops at the end of the sequence.

    Args:
        vocab_size: Size of the tokenizer's vocabulary.
        embedding_size: Width of the token embeddings.
        hidden_size: Width of the LSTM state.
        read_tokens: Tokens read between two jump decisions (R, >= 1).
        max_jump: Largest number of tokens one jump skips (K, >= 0).
        max_jumps: Most jumps per sequence (N, >= 0).
        policy_loss_coef: Weight (>= 0) of the REINFORCE term in the training loss.
        baseline_loss_coef: Weight (>= 0) of the squared error of the learned reward baseline.
        entropy_coef: Weight (>= 0) of the policy-entropy bonus (subtracted from the loss).
        read_penalty: Reward shaping (>= 0): the REINFORCE reward of a row is +1 (correct) or -1 (wrong) minus
            ``read_penalty`` times the fraction of its tokens it read, so the policy also learns to read less.
        reward: REINFORCE reward of a row: ``"accuracy"`` (+1 for a correct prediction, -1 otherwise, as in the
            paper) or ``"probability"`` (``2 * p(label) - 1``: the same range, but graded by how confident the
            classifier is in the right label, so the reward has less variance and still says something when the
            prediction does not flip). ``read_penalty`` is subtracted in both cases.
        full_reading_loss_coef: Weight (>= 0) of a second cross-entropy term in adaptive training: the same batch
            read in full (every token, the fused LSTM) and classified with the same weights. The LSTM then learns
            from every token, not only from the ones the sampled policy read, and the full-reading reference stays
            trained; 0 (default) trains on the jumped reading alone.
        stop_threshold: Inference knob in [0, 1]: in eval the reader takes the policy's most likely action, but
            stops only when the probability of stopping is >= this value (otherwise it takes the most likely jump).
            0.0 is plain greedy decoding; higher values read more. Read at every forward.
        policy_gradient_to_reader: Whether the REINFORCE gradient also flows into the LSTM and embeddings (True),
            or only into the jump policy (False: the reader learns from the cross-entropy alone, which is steadier
            in short runs).
        pad_token_id: Id of the padding token, or ``None``.
        classifier_dropout: Dropout before the classifier, in [0, 1).
        freeze_embeddings: Keep the token embeddings fixed in training.
        reading_policy: ``"adaptive"`` or ``"full"`` (no jumping: every token is read).
        initializer_range: Std of the normal init of embeddings and linear layers.
    """

    model_type = "jump_lstm"

    vocab_size: int = 30522
    embedding_size: int = 128
    hidden_size: int = 128
    read_tokens: int = 5
    max_jump: int = 10
    max_jumps: int = 8
    policy_loss_coef: float = 1.0
    baseline_loss_coef: float = 1.0
    entropy_coef: float = 0.01
    read_penalty: float = 0.0
    reward: str = "accuracy"
    full_reading_loss_coef: float = 0.0
    stop_threshold: float = 0.0
    policy_gradient_to_reader: bool = True
    pad_token_id: int | None = 0
    classifier_dropout: float = 0.1
    freeze_embeddings: bool = False
    reading_policy: str = "adaptive"
    initializer_range: float = 0.02

    def validate_reader(self) -> None:
        super().validate_reader()
        check_number("read_tokens", self.read_tokens, 1, None, integer=True)
        check_number("max_jump", self.max_jump, 0, None, integer=True)
        check_number("max_jumps", self.max_jumps, 0, None, integer=True)
        check_number("policy_loss_coef", self.policy_loss_coef, 0.0, None)
        check_number("baseline_loss_coef", self.baseline_loss_coef, 0.0, None)
        check_number("entropy_coef", self.entropy_coef, 0.0, None)
        check_number("read_penalty", self.read_penalty, 0.0, None)
        check_choice("reward", self.reward, JUMP_REWARDS)
        check_number("full_reading_loss_coef", self.full_reading_loss_coef, 0.0, None)
        if not isinstance(self.policy_gradient_to_reader, bool):
            raise TypeError(
                f"`policy_gradient_to_reader` must be True or False; got {self.policy_gradient_to_reader!r}."
            )
