"""The switch-MoE auxiliary losses under DDP (``accelerate launch --num_processes 2 --cpu``).

With ``global_load_balancing`` (the default) the ranks sum their expert counts, so the DDP-averaged gradient and
the ranks' mean loss equal those of one process that sees the whole batch, even when the ranks hold different
numbers of real tokens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap

import pytest
import torch
from text_testers import padded_batch, tiny_backbone_config
from transformers import BertForSequenceClassification

from adaptive_hf import upcycle

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification
    import adaptive_hf  # noqa: F401  (registers the switch-MoE classes)

    folder = sys.argv[1]
    accelerator = Accelerator(cpu=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder).train()
    batch = torch.load(folder + "/batch.pt")
    shard = {key: value.chunk(accelerator.num_processes)[accelerator.process_index] for key, value in batch.items()}
    model = accelerator.prepare(model)
    out = model(**shard)
    accelerator.backward(out.loss)
    grads = {name: p.grad.clone() for name, p in accelerator.unwrap_model(model).named_parameters()}
    loss = accelerator.reduce(out.loss.detach(), "mean")
    aux = accelerator.reduce(out.aux_loss.detach(), "mean")
    world = accelerator.num_processes
    if accelerator.is_main_process:
        torch.save({"grads": grads, "loss": loss, "aux": aux, "world": world}, folder + "/ddp.pt")
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _full_batch_step(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate launcher")
def test_aux_loss_is_the_global_batch_loss_under_ddp(tmp_path):
    torch.manual_seed(0)
    config = tiny_backbone_config("bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.num_labels = 3
    dense = BertForSequenceClassification(config)
    model = upcycle(
        dense,
        num_experts=4,
        moe_layers=[1, 3],
        capacity_factor=1.0,
        expert_noise=0.3,
        router_aux_loss_coef=1.0,
        seed=0,
    ).train()
    with torch.no_grad():  # a sharper router, so that the ranks' load really differs
        for module in model.moe_modules():
            module.router.weight.mul_(20)
    model.save_pretrained(tmp_path)
    input_ids, mask = padded_batch(8, 10, seed=5, min_len=2)
    mask[4:, 5:] = 0  # the second rank holds far fewer real tokens than the first
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    torch.save(batch, tmp_path / "batch.pt")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = tmp_path / "ddp_step.py"
    script.write_text(SCRIPT)
    # `accelerate launch --cpu --num_processes 2` starts a single process unless an MPI hostfile is given; the
    # torchrun launcher behind --multi_gpu starts the two processes, and Accelerator(cpu=True) joins them over gloo.
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    command += [str(script), str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-4000:]
    ddp = torch.load(tmp_path / "ddp.pt")
    assert ddp["world"] == 2

    out, full_grads = _full_batch_step(model, batch)
    torch.testing.assert_close(ddp["aux"], out.aux_loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ddp["loss"], out.loss.detach(), rtol=1e-5, atol=1e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    # Control: averaging the per-shard (local) losses gives a different router gradient, so the check above can fail.
    local = {}
    for shard in range(2):
        part = {key: value.chunk(2)[shard] for key, value in batch.items()}
        _, grads = _full_batch_step(model, part)
        for name, grad in grads.items():
            local[name] = local.get(name, 0) + grad / 2
    router = next(name for name in full_grads if "router" in name)
    assert not torch.allclose(local[router], full_grads[router], rtol=1e-3, atol=1e-6)
