"""``adaptive-hf``: calibrate, evaluate, benchmark and describe a saved adaptive classifier (text, images or video).

Each subcommand works on a folder written by ``save_pretrained`` and a dataset. The command finds the model's
technique in the registry (:func:`adaptive_hf.technique_of` on the saved config) and runs the hook that technique
registered for it (``TechniqueSpec.cli``); a technique without a hook for a command is refused with a clear error.

* Text models (early exit, halting, Skim-RNN/LSTM-Jump; with their tokenizer, or pass ``--tokenizer``): an offline
  name (``amazon_fine_food``, ``trump_tweets``), a Hub dataset name, a local ``.json``/``.jsonl``/``.csv``/``.tsv``/
  ``.parquet`` file (used whole) or a folder written by ``Dataset.save_to_disk``.
* Image models (``EarlyExitTimmForImageClassification``, ``EarlyExitViTForImageClassification``,
  ``HaltingTimmForImageClassification``): an offline image set of :func:`adaptive_hf.data.load_image_arrays`
  (``fashion_mnist``, ``mnist_subset``; splits ``train``/``validation``/``test``), a Hub dataset name or a
  ``save_to_disk`` folder with an image column. Images are prepared the way the model records: its input size and
  channels, and the normalization in ``config.image_mean``/``image_std`` (else a saved ``preprocessor_config.json``,
  else the timm model's ``pretrained_cfg``, else 0.5).
* Frame-sampling video models: ``moving_fashion_mnist`` or a ``save_to_disk`` folder with a ``frames`` column
  (see :mod:`adaptive_hf.video.evaluation`).

Layout: ``main`` (parser, entry point), one module per command (``calibrate``, ``evaluate``, ``bench``, ``card``),
``loading`` (model, technique, data, hook dispatch), ``text`` and ``images`` (data preparation), ``arguments``.
Nothing else in the package imports this one.

Examples::

    adaptive-hf calibrate out --dataset amazon_fine_food --split validation --max-accuracy-drop 0.005 --save
    adaptive-hf evaluate out --dataset amazon_fine_food --json eval.json --plot tradeoff.png
    adaptive-hf bench out --dataset amazon_fine_food --batch-sizes 1 64 --threads 2 --repeats 5
    adaptive-hf evaluate outputs/early_exit_vision --dataset fashion_mnist --max-samples 2000 --plot tradeoff.png
    adaptive-hf card out
"""

from __future__ import annotations

from .errors import CliError
from .images import image_batches, image_preprocessing, is_image_model, load_image_data
from .loading import Prepared, load_config, load_model, prepare, prepare_data, technique_for
from .main import build_parser, main
from .text import encode_labels, load_dataset, load_tokenizer, tokenize

__all__ = [
    "CliError",
    "Prepared",
    "build_parser",
    "encode_labels",
    "image_batches",
    "image_preprocessing",
    "is_image_model",
    "load_config",
    "load_dataset",
    "load_image_data",
    "load_model",
    "load_tokenizer",
    "main",
    "prepare",
    "prepare_data",
    "technique_for",
    "tokenize",
]
