"""Where the time of an early-exit text forward goes: torch.profiler over one forced-exit adaptive pass.

Uses the forced exit distribution of ``early_exit_forced.py`` (row ``i`` exits at exit ``i mod exits``) and the same
family/width options, and prints the operators by self CPU time, for the adaptive pass and for full compute::

    python benchmarks/early_exit_profile.py --family qwen3 --layers 28 --hidden 1024 --attention_heads 16 \\
        --kv_heads 8 --head_dim 128 --intermediate 3072 --vocab 1000 --exit_layers 4,8,12,16,20,24,28 \\
        --seq_lens 16 --batch_sizes 64 --threads 1
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
import early_exit_forced as forced  # noqa: E402

import adaptive_hf  # noqa: E402


def profile_pass(run, rows: int) -> None:
    """Prints the top operators of ``run()`` by self CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main(argv=None) -> None:
    """Profiles one adaptive and one full-compute pass per sequence length and batch size."""
    args = forced.parse_args(argv)
    torch.set_num_threads(args.threads)
    num_layers = int(args.layers.split(",")[-1])
    torch.manual_seed(args.seed)
    settings = {"exit_head": args.exit_head}
    if args.exit_layers:
        settings["exit_layers"] = [int(x) for x in args.exit_layers.split(",") if x]
    config = forced.family_config(args, num_layers)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(config, **settings).eval()
    exit_layers = model.config.exit_layers
    for seq_len in [int(x) for x in args.seq_lens.split(",") if x]:
        for batch_size in [int(x) for x in args.batch_sizes.split(",") if x]:
            generator = torch.Generator().manual_seed(args.seed)
            ids = torch.randint(5, model.config.vocab_size, (batch_size, seq_len), generator=generator)
            order = torch.randperm(batch_size, generator=generator)
            hook = forced.ForcedExits([torch.tensor(exit_layers)[order % len(exit_layers)]], exit_layers)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            print(f"\n=== seq_len {seq_len}, batch {batch_size}: adaptive (forced exits) ===")
            model.config.exit_policy, model.config.exit_threshold = "confidence", 0.5
            with hook.installed(), torch.inference_mode():
                hook.start(0)
                model(**batch)  # warm-up
                hook.start(0)
                profile_pass(lambda batch=batch: model(**batch), 25)
            print(f"\n=== seq_len {seq_len}, batch {batch_size}: full compute ===")
            with adaptive_hf.full_compute(model), torch.inference_mode():
                profile_pass(lambda batch=batch: model(**batch), 15)


if __name__ == "__main__":
    main()
