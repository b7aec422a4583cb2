"""Early-exit text models at a forced exit distribution: realized against theoretical speedup without training.

Any supported family at any depth and width, with random weights. Which row exits at which layer is forced: row
``i`` of the timed rows exits at exit ``i mod (number of exits)`` (rows shuffled with ``--seed``), so every exit
takes the same share and the theoretical count (``model.exit_flops`` per row) covers exactly the exits taken; the
script checks the model's ``exit_layer`` against the forced layers. The model runs policy ``confidence`` as usual:
every head, its pooling and the policy's decision run as they would; only the decision's result is replaced, by a
test-only hook on ``adaptive_hf.early_exit.modeling.count_exits`` that returns a precomputed mask.

Timed as ``shared/benchmarks.md`` asks: same inputs, one process, interleaved (adaptive, full compute, plain
backbone) after warm-up, median of ``--repeats`` rounds, fixed ``torch.set_num_threads``. Besides the speedup
against our own full-compute path (policy ``none``), it reports the speedup against the PLAIN backbone model
(the stock ``<Arch>ForSequenceClassification`` the user started from), and full compute over plain::

    python benchmarks/early_exit_forced.py --family bert --layers 6,12 --seq_lens 16,128 --threads 1

Hugging Face image families (``vit``, ``dinov2``, ``convnext``, ``convnextv2``) run on random images of
``--image_sizes`` pixels with base-size random configs (ViT-B/16, DINOv2-B/14: 768 wide, ``--layers`` deep;
ConvNeXt-T: depths 3,3,9,3, whose 4 stages are its units, so ``--layers 4``); the plain model is the stock
``...ForImageClassification``::

    python benchmarks/early_exit_forced.py --family dinov2 --layers 12 --image_sizes 224 --head_type linear
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextV2Config,
    Dinov2Config,
    ViTConfig,
)

import adaptive_hf
import adaptive_hf.early_exit.modeling as early_exit_modeling
from adaptive_hf.core.adapters.base import FAMILY_ADAPTERS
from adaptive_hf.early_exit.benchmarking import plain_counterpart, time_setting
from adaptive_hf.early_exit.calibration import sample_costs

FAMILY_WIDTH_FIELDS = {
    "distilbert": ("n_layers", "dim", "n_heads", "hidden_dim"),
}
DEFAULT_WIDTH_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
# Settings besides depth and width that make a family's random config match its real checkpoints.
FAMILY_SETTINGS = {
    # DeBERTa-v3-base: relative attention with 256 log buckets, c2p + p2c through shared projections, layer-normed
    # relative embeddings, no absolute positions or segment embeddings.
    "deberta-v2": dict(
        vocab_size=128100,
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="bert", help="model_type of a supported family (bert, roberta, ...).")
    parser.add_argument("--layers", default="6,12", help="Depths to measure.")
    parser.add_argument("--hidden", type=int, default=384, help="Hidden width (MiniLM: 384, base: 768).")
    parser.add_argument("--attention_heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, help="FFN width (default 4 x hidden).")
    parser.add_argument("--kv_heads", type=int, help="Key/value heads of decoders (grouped-query attention).")
    parser.add_argument("--head_dim", type=int, help="Head width of decoders (default hidden / heads).")
    parser.add_argument("--vocab", type=int, help="Vocabulary size (default the family's; small saves memory).")
    parser.add_argument("--exit_layers", help="Comma-separated 1-based exit layers (default every layer).")
    parser.add_argument("--seq_lens", default="16,32,64,128")
    parser.add_argument("--image_sizes", default="224", help="Image sides, for image families.")
    parser.add_argument("--batch_sizes", default="1,64")
    parser.add_argument("--head_type", "--exit_head", default="mlp", help="linear or mlp (--exit_head: old name).")
    parser.add_argument(
        "--head_pooling", "--exit_pooling", help="Default the family's ('mean' for encoders, 'last' for decoders)."
    )
    parser.add_argument("--rows_batch_1", type=int, default=0, help="Rows timed at batch 1 (default 2 x exits).")
    parser.add_argument("--rows", type=int, default=128, help="Rows timed at batch sizes > 1.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="Write the results here.")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        print(f"warning: --repeats {args.repeats} < 5 (benchmarks.md asks for at least 5)", file=sys.stderr)
    return args


def is_image_family(family: str) -> bool:
    """Whether ``family`` is a Hugging Face image family (timed on images instead of token ids)."""
    adapter = FAMILY_ADAPTERS.get(family)
    return adapter is not None and adapter.modality == "image"


def image_family_config(family: str, num_layers: int):
    """A base-size random-weight config of an HF image family (ConvNeXt: tiny, whose units are its 4 stages)."""
    if family in ("convnext", "convnextv2"):
        if num_layers != 4:
            raise ValueError(f"{family}: the units are the 4 stages of ConvNeXt-T; pass --layers 4, got {num_layers}.")
        config_class = ConvNextConfig if family == "convnext" else ConvNextV2Config
        return config_class(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], image_size=224, num_labels=2)
    if family == "dinov2":
        values = dict(hidden_size=768, num_attention_heads=12, patch_size=14, image_size=224, num_labels=2)
        return Dinov2Config(num_hidden_layers=num_layers, **values)
    if family == "vit":
        return ViTConfig(num_hidden_layers=num_layers, num_labels=2)
    raise ValueError(f"No base-size config for image family {family!r}; supported: vit, dinov2, convnext, convnextv2.")


def family_config(args, num_layers: int):
    """A random-weight config of the family at the requested depth and width."""
    if is_image_family(args.family):
        return image_family_config(args.family, num_layers)
    names = FAMILY_WIDTH_FIELDS.get(args.family, DEFAULT_WIDTH_FIELDS)
    values = (num_layers, args.hidden, args.attention_heads, args.intermediate or 4 * args.hidden)
    extra = {"num_key_value_heads": args.kv_heads, "head_dim": args.head_dim, "vocab_size": args.vocab}
    config = AutoConfig.for_model(
        args.family,
        **dict(zip(names, values)),
        **FAMILY_SETTINGS.get(args.family, {}),
        **{k: v for k, v in extra.items() if v is not None},
    )
    config.num_labels = 2
    if hasattr(config, "pad_token_id") and config.pad_token_id is None:
        config.pad_token_id = 0  # decoder classifiers refuse batches without one; the random ids start at 5
    return config


class ForcedExits:
    """Replaces the result of ``count_exits`` with precomputed masks, so chosen rows exit at chosen layers.

    The real decision still runs (its cost is part of what is measured); the forced mask for head ``k`` of batch
    ``b`` is ready before the timing starts, so the hook adds one Python call per head and no tensor op.
    """

    def __init__(self, forced_layers: list[torch.Tensor], exit_layers: list[int]):
        self.masks = []
        for layers in forced_layers:
            per_head = []
            for layer in exit_layers[:-1]:
                remaining = layers[layers >= layer]
                mask = remaining == layer
                per_head.append((int(mask.sum()), mask if 0 < int(mask.sum()) < mask.numel() else None))
                if bool(mask.all()):
                    break
            self.masks.append(per_head)
        self.current: list[tuple[int, torch.Tensor | None]] = []
        self.calls = 0

    def start(self, batch_index: int) -> None:
        self.current, self.calls = self.masks[batch_index], 0

    def count_exits(self, policy, logits, threshold, patience, state):
        _, _, state = self.real_count_exits(policy, logits, threshold, patience, state)
        count, mask = self.current[self.calls]
        self.calls += 1
        return count, mask, state

    @contextlib.contextmanager
    def installed(self):
        self.real_count_exits = early_exit_modeling.count_exits
        early_exit_modeling.count_exits = self.count_exits
        try:
            yield self
        finally:
            early_exit_modeling.count_exits = self.real_count_exits


def plain_image_counterpart(model):
    """The stock ``...ForImageClassification`` with the early-exit model's backbone and classifier weights."""
    values = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    plain = AutoModelForImageClassification.from_config(model.adapter_class.config_class(**values))
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("exit_heads.")}
    plain.load_state_dict(weights, strict=True)
    return plain.eval()


def measure(args, num_layers: int, seq_len: int, batch_size: int) -> dict:
    """One depth x length x batch size: theoretical, realized vs full compute and vs plain, real/theo."""
    torch.manual_seed(args.seed)
    config = family_config(args, num_layers)
    image = is_image_family(args.family)
    auto = (
        adaptive_hf.AutoEarlyExitModelForImageClassification
        if image
        else adaptive_hf.AutoEarlyExitModelForSequenceClassification
    )
    settings = {"head_type": args.head_type}
    if args.head_pooling:
        settings["head_pooling"] = args.head_pooling
    if args.exit_layers:
        settings["exit_layers"] = [int(x) for x in args.exit_layers.split(",") if x]
    model = auto.from_config(config, **settings).eval()
    plain = plain_image_counterpart(model) if image else plain_counterpart(model)
    exit_layers = model.config.exit_layers
    rows = (args.rows_batch_1 or 2 * len(exit_layers)) if batch_size == 1 else max(args.rows, batch_size)
    rows -= rows % batch_size
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(rows, generator=generator)
    forced = torch.tensor(exit_layers)[order % len(exit_layers)]
    if image:  # seq_len is the image side here
        pixels = torch.randn(rows, model.config.num_channels, seq_len, seq_len, generator=generator)
        batches = [{"pixel_values": pixels[i : i + batch_size]} for i in range(0, rows, batch_size)]
    else:
        low = 5 if model.config.vocab_size > 10 else 0
        ids = torch.randint(low, model.config.vocab_size, (rows, seq_len), generator=generator)
        batches = [
            {"input_ids": ids[i : i + batch_size], "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
            for i in range(0, rows, batch_size)
        ]
    forced_batches = list(forced.split(batch_size))
    hook = ForcedExits(forced_batches, exit_layers)

    def adaptive_pass():
        out = []
        for index, batch in enumerate(batches):
            hook.start(index)
            out.append(model(**batch).exit_layer)
        return out

    def full_pass():
        return [model(**batch).exit_layer for batch in batches]

    def plain_pass():
        return [plain(**batch).logits for batch in batches]

    setting = {"exit_policy": "confidence", "exit_threshold": 0.5}
    with hook.installed():
        _, timing, exit_layer = time_setting(
            model, setting, adaptive_pass, full_pass, args.repeats, 1, args.threads, plain_pass
        )
    if not torch.equal(exit_layer, forced):
        raise RuntimeError("The model did not exit where forced; the hook no longer matches the exit loop.")
    costs, full_costs = sample_costs(model, torch.full((rows,), seq_len))
    head_of_layer = {layer: k for k, layer in enumerate(exit_layers)}
    heads = torch.tensor([head_of_layer[int(layer)] for layer in forced])
    spent = costs.gather(1, heads.view(-1, 1)).sum()
    result = {"layers": num_layers, "seq_len": seq_len, "batch_size": batch_size, "rows": rows}
    result["average_exit_layer"] = float(forced.double().mean())
    result.update(timing.summary(float(full_costs.sum() / spent)))
    return result


def format_table(results: list[dict]) -> str:
    """Markdown: one row per depth x length x batch size."""
    lines = [
        "| layers | tokens (image side) | batch | theoretical | realized vs full | real/theo | realized vs plain | "
        "real/theo vs plain | full / plain | spread (a/f/p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        spread = f"{r['adaptive_spread']:.0%}/{r['full_spread']:.0%}/{r['plain_spread']:.0%}"
        lines.append(
            f"| {r['layers']} | {r['seq_len']} | {r['batch_size']} | {r['theoretical_speedup']:.2f}x | "
            f"{r['realized_speedup']:.2f}x | {r['efficiency']:.2f} | {r['realized_speedup_vs_plain']:.2f}x | "
            f"{r['efficiency_vs_plain']:.2f} | {r['full_over_plain']:.3f} | {spread}{' noisy' if r['noisy'] else ''} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Runs every depth x length x batch size and prints the table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for num_layers in [int(x) for x in args.layers.split(",") if x]:
        sizes = args.image_sizes if is_image_family(args.family) else args.seq_lens
        for seq_len in [int(x) for x in sizes.split(",") if x]:
            for batch_size in [int(x) for x in args.batch_sizes.split(",") if x]:
                result = measure(args, num_layers, seq_len, batch_size)
                results.append(result)
                print(format_table([result]).splitlines()[-1], flush=True)
    report = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"logical_cores": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "torch": torch.__version__,
        "family": args.family,
        "hidden": args.hidden,
        "head_type": args.head_type,
        "head_pooling": args.head_pooling,
        "threads": args.threads,
        "results": results,
    }
    print()
    print(format_table(results))
    print(f"\nload average at end {report['machine']['load_average_at_end']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
