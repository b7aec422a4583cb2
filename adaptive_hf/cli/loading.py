"""What every command starts with: the saved model's config, its technique (from the registry), the model, and its
data prepared the CLI's way; then the hand-off to the technique's command hook."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.technique import TECHNIQUES, TechniqueSpec, technique_of
from .errors import CliError
from .images import image_batches, image_preprocessing, is_image_model, load_image_data
from .text import encode_labels, load_dataset, load_tokenizer, text_batches, tokenize


def load_config(model_dir: str):
    """The config of a model folder written by ``save_pretrained``.

    Args:
        model_dir: The folder.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise CliError(f"Model folder {model_dir!r} does not exist (expected a folder written by save_pretrained).")
    if not (path / "config.json").is_file():
        raise CliError(f"{model_dir!r} has no config.json; expected a folder written by save_pretrained.")
    # Importing this package imported adaptive_hf, which registered its configs with AutoConfig.
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError) as error:
        raise CliError(f"{model_dir!r} holds a config that transformers cannot read ({error}).") from error


def technique_for(model_dir: str, config=None) -> TechniqueSpec:
    """The registered technique of the model saved in ``model_dir`` (by its config's ``model_type``).

    Args:
        model_dir: A folder written by ``save_pretrained``.
        config: Its config, when already loaded.
    """
    config = load_config(model_dir) if config is None else config
    try:
        return technique_of(config)
    except TypeError as error:
        raise CliError(
            f"{model_dir!r} holds a {type(config).__name__} (model_type={config.model_type!r}), not an adaptive "
            f"classifier; the CLI works on models of the registered techniques {sorted(TECHNIQUES)} saved with "
            "save_pretrained."
        ) from error


def load_model(model_dir: str):
    """Loads a saved adaptive classifier (text, image or video) from a local folder, in eval mode.

    Args:
        model_dir: Folder written by ``save_pretrained``.
    """
    from transformers import (
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
        AutoModelForVideoClassification,
    )

    config = load_config(model_dir)
    technique_for(model_dir, config)
    autos = (AutoModelForImageClassification, AutoModelForVideoClassification, AutoModelForSequenceClassification)
    auto = next((a for a in autos if type(config) in a._model_mapping), AutoModelForSequenceClassification)
    return auto.from_pretrained(str(model_dir)).eval()


@dataclass
class Prepared:
    """A loaded model and its evaluation data, text or images, behind one interface (what ``prepare`` gives a
    technique's command hook)."""

    model: Any
    labels: Any
    num_samples: int
    make_batches: Callable[..., Iterable[dict]]
    tokenizer: Any = None
    dataset: Any = None
    preprocessing: dict[str, Any] | None = None

    @property
    def is_image(self) -> bool:
        return self.preprocessing is not None

    def batches(self, batch_size: int, limit: int | None = None) -> list[dict]:
        """Model-input batches on the model's device (the first ``limit`` samples)."""
        return list(self.make_batches(batch_size, limit))


def _prepare_images(args, model, require_labels: bool, device) -> Prepared:
    import torch

    if getattr(args, "channels_last", False):
        # Both the adaptive and the full-depth runs use it; CPU CNNs then cost in proportion to their FLOPs.
        model.to(memory_format=torch.channels_last)
    if getattr(args, "fold_batch_norms", False):
        if not hasattr(model, "fold_batch_norms"):
            raise CliError(f"--fold-batch-norms works on timm CNN early-exit models; got {type(model).__name__}.")
        model.fold_batch_norms()
    preprocessing = image_preprocessing(model, args.model_dir, args.image_mean, args.image_std)
    images, labels = load_image_data(
        args.dataset,
        args.split,
        model.config,
        args.max_samples,
        args.image_column,
        args.label_column,
        require_labels,
        args.seed,
    )

    def make_batches(batch_size, limit=None):
        return image_batches(images, preprocessing, batch_size, device, limit)

    return Prepared(model, labels, len(images), make_batches, preprocessing=preprocessing)


def prepare_data(args, model, require_labels: bool) -> Prepared:
    """The evaluation data of a command for a loaded model: tokenized text or prepared images.

    Args:
        args: The command's arguments (``dataset``, ``split``, ``max_samples``, columns, image options, ...).
        model: The loaded model.
        require_labels: Raise when the data has no labels.
    """
    import torch

    device = next(model.parameters()).device
    if is_image_model(model):
        return _prepare_images(args, model, require_labels, device)
    tokenizer = load_tokenizer(args.model_dir, args.tokenizer)
    dataset = load_dataset(args.dataset, args.split, args.max_samples, args.text_column, args.label_column)
    dataset = encode_labels(dataset, model.config, require_labels)
    dataset = tokenize(dataset, tokenizer, args.max_length)
    labels = torch.as_tensor(dataset["label"]) if "label" in dataset.column_names else None

    def make_batches(batch_size, limit=None):
        subset = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
        return text_batches(subset, tokenizer, batch_size, device)

    return Prepared(model, labels, len(dataset), make_batches, tokenizer=tokenizer, dataset=dataset)


def prepare(args, require_labels: bool) -> Prepared:
    """Model and evaluation data for a command.

    Args:
        args: The command's arguments.
        require_labels: Raise when the data has no labels.
    """
    return prepare_data(args, load_model(args.model_dir), require_labels)


def run_hook(command: str, args, refusal: str | None = None) -> int:
    """Runs the hook the model's technique registered for ``command`` (see ``TechniqueSpec.cli``).

    Args:
        command: The command name, e.g. ``"evaluate"``.
        args: Its parsed arguments (``model_dir`` first of all).
        refusal: The error message when the technique has no hook for the command, with ``{model_dir}`` and
            ``{technique}`` filled in (default: a generic one that names the techniques which have it).
    """
    spec = technique_for(args.model_dir)
    hook = spec.command(command)
    if hook is None:
        serving = sorted(name for name, other in TECHNIQUES.items() if other.command(command) is not None)
        if refusal is not None:
            raise CliError(refusal.format(model_dir=args.model_dir, technique=spec.name))
        raise CliError(
            f"{command} is not available for {spec.name} models ({args.model_dir!r}); the techniques with a "
            f"{command} command are {serving}."
        )
    return hook(args, lambda require_labels: prepare(args, require_labels))
