"""The shared tester: every technique x family (``adaptive_cases.CASES``) keeps the same promises.

* full compute (``adaptive_hf.full_compute``) equals the plain backbone;
* batched equals one at a time: the prediction and every per-sample compute field, with padding;
* in eval, forward hooks prove that finished rows, tokens or frames never reach a later layer;
* save and load is exact (safetensors, the same class through the Auto class, the same outputs);
* ``trust_remote_code`` loads in a fresh process that cannot import ``adaptive_hf``;
* the training loss includes the auxiliary terms, and one stock ``transformers.Trainer`` step runs with it;
* bad input gets a clear ``ValueError``/``TypeError`` from the library, never a framework error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from adaptive_case import (
    PACKAGE_DIR,
    AdaptiveCase,
    config_values,
    real_positions,
    rows_of,
)
from adaptive_cases import CASES
from torch import nn
from trainer_testers import cpu_training_args

import adaptive_hf


def case_params(select=lambda case: True):
    return [pytest.param(case, id=case.name) for case in CASES if select(case)]


def mode_params():
    return [pytest.param(case, mode, id=f"{case.name}-{mode.name}") for case in CASES for mode in case.modes]


def in_mode(case: AdaptiveCase, model: nn.Module, batch, mode=None) -> dict:
    """Applies ``mode``'s runtime settings (the case's first mode by default) to ``model.config``."""
    mode = mode or case.modes[0]
    settings = mode.settings(model, batch)
    for name, value in settings.items():
        setattr(model.config, name, value)
    return settings


def assert_same(name, single, batched, exact_ints=True):
    if single is None and batched is None:
        return
    assert single is not None and batched is not None, name
    if exact_ints and not single.is_floating_point():
        assert torch.equal(single, batched), (name, single, batched)
    else:
        torch.testing.assert_close(single, batched, rtol=1e-4, atol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------- full compute
def variant_params():
    params = []
    for case in CASES:
        for overrides, error in case.variants or (({}, None),):
            suffix = "-".join(f"{k}={v}" for k, v in overrides.items())
            params.append(pytest.param(case, overrides, error, id=case.name + (f"-{suffix}" if suffix else "")))
    return params


@pytest.mark.parametrize(("case", "overrides", "error"), variant_params())
def test_full_compute_equals_plain_backbone(case, overrides, error):
    if error is not None:
        with pytest.raises(error, match=next(iter(overrides))):
            case.build(**overrides)
        return
    model = case.build(**overrides)
    assert adaptive_hf.technique_of(model).name == case.technique
    batch = case.batch()
    before = model.config.to_dict()
    with adaptive_hf.full_compute(model), torch.no_grad():
        out = model(**batch)
        expected = case.reference(model, batch) if case.reference else None
    assert model.config.to_dict() == before, "full_compute must restore the runtime knobs"
    if expected is not None:
        torch.testing.assert_close(
            real_positions(out.logits, batch), real_positions(expected, batch), rtol=1e-5, atol=1e-5
        )
    case.full_fields(model, batch, out)
    if case.never_stopping is not None:  # the adaptive path itself, when nothing stops early, is the backbone too
        model = case.never_stopping(model)
        with torch.no_grad():
            adaptive = model(**batch)
        torch.testing.assert_close(adaptive.logits, expected, rtol=1e-5, atol=1e-5)
        case.full_fields(model, batch, adaptive)
        for name in case.sample_fields + case.token_fields:  # e.g. the same ponder cost on both paths
            torch.testing.assert_close(getattr(adaptive, name), getattr(out, name), msg=name)


# ---------------------------------------------------------------------------------- batched = one at a time
@pytest.mark.parametrize(("case", "mode"), mode_params())
def test_batched_equals_one_at_a_time(case, mode):
    model = case.build()
    batch = case.batch(8, seed=1)
    in_mode(case, model, batch, mode)
    with torch.no_grad():
        batched = model(**batch)
        singles = [model(**rows_of(batch, row, mode.trim_padding)) for row in range(8)]
    for row, single in enumerate(singles):
        torch.testing.assert_close(single.logits[0], batched.logits[row], rtol=1e-4, atol=1e-5)
        for name in case.sample_fields:
            value = getattr(batched, name)
            assert_same(name, getattr(single, name), None if value is None else value[row : row + 1])
        for name in case.token_fields:
            length = getattr(single, name).size(1)
            assert_same(name, getattr(single, name)[0], getattr(batched, name)[row, :length])
    for name in case.summed_fields:  # batch totals: the rows' own totals add up
        assert_same(name, sum(getattr(single, name) for single in singles), getattr(batched, name))
    if mode.mixed and case.stopped_early is not None:
        assert case.stopped_early(batched, batch), "nothing stopped early: the test would not exercise compaction"


# -------------------------------------------------------------------------------------- skipped work never runs
@pytest.mark.parametrize(
    "case",
    case_params(lambda case: case.work is not None),
)
def test_finished_rows_never_reach_a_later_layer(case):
    model = case.build()
    batch = case.batch(8, seed=3)
    mode = next((mode for mode in case.modes if mode.mixed), case.modes[0])
    in_mode(case, model, batch, mode)
    observed, expected, out = case.work(model, batch)
    assert observed == expected
    if mode.mixed and case.stopped_early is not None:
        assert case.stopped_early(out, batch), "nothing stopped early: the hooks would prove nothing"
    # At the least-compute end of every declared knob (e.g. a threshold that stops everything at the first exit).
    for chain in adaptive_hf.technique_of(model).candidate_chains(model.config):
        with config_values(model, chain[-1]):
            observed, expected, out = case.work(model, batch)
        assert observed == expected, chain[-1]


# ------------------------------------------------------------------------------------------------- save / load
IGNORED_CONFIG_KEYS = ("_name_or_path", "transformers_version", "auto_map", "architectures")


def comparable_config(model):
    return {k: v for k, v in model.config.to_dict().items() if k not in IGNORED_CONFIG_KEYS}


@pytest.mark.parametrize("case", case_params())
def test_save_and_load_is_exact(case, tmp_path):
    model = case.build(**case.save_overrides)
    batch = case.batch()
    in_mode(case, model, batch)
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert "README.md" in files
    card = (tmp_path / "README.md").read_text()
    assert all(word in card for word in case.card_words), case.card_words
    reloaded = case.auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert comparable_config(reloaded) == comparable_config(model)
    state = reloaded.state_dict()
    assert set(state) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    with torch.no_grad():
        a, b = model(**batch), reloaded(**batch)
    # Same weights and decisions; the logits may differ in the last bits when the loaded tensors' memory alignment
    # makes the BLAS pick another kernel.
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-6)
    for name in case.sample_fields + case.token_fields + case.summed_fields:
        if getattr(a, name) is None:
            continue
        if getattr(a, name).is_floating_point():  # e.g. ACT's N + R: the same last-bit caveat as the logits
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(getattr(a, name), getattr(b, name)), name


# ------------------------------------------------------------------------------------------- trust_remote_code
REMOTE_CASES = [case for case in CASES if case.remote_code]
REMOTE_SCRIPT = """
import json, sys
sys.modules["adaptive_hf"] = None  # the package cannot be imported in this process
import torch
import transformers
torch.set_num_threads(1)
result = {}
for name, auto, fields in json.load(open(sys.argv[1])):
    folder = sys.argv[2] + "/" + name
    model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("adaptive_hf"), type(model).__module__
    with torch.no_grad():
        out = model(**torch.load(folder + "/batch.pt"))
    torch.save({"logits": out.logits, **{f: getattr(out, f) for f in fields}}, folder + "/remote.pt")
    result[name] = type(model).__name__
print("RESULT" + json.dumps(result))
"""


def test_trust_remote_code_in_fresh_process(tmp_path):
    """One fresh process loads every remote-code case (one or a few per technique; see ``remote_code``)."""
    plan, expected = [], {}
    for case in REMOTE_CASES:
        folder_name = case.name.replace("/", "__")
        model = case.build(**case.save_overrides)
        batch = case.batch(seed=10)
        in_mode(case, model, batch)
        model.save_pretrained(tmp_path / folder_name)
        torch.save(batch, tmp_path / folder_name / "batch.pt")
        fields = [name for name in case.sample_fields + case.token_fields + case.summed_fields]
        with torch.no_grad():
            out = model(**batch)
        fields = [name for name in fields if getattr(out, name) is not None]
        expected[folder_name] = (type(model).__name__, out, fields)
        plan.append((folder_name, case.auto_class.__name__, fields))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REMOTE_SCRIPT), str(tmp_path / "plan.json"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT"))
    classes = json.loads(line[len("RESULT") :])
    for folder_name, (class_name, out, fields) in expected.items():
        assert classes[folder_name] == class_name, folder_name
        remote = torch.load(tmp_path / folder_name / "remote.pt")
        torch.testing.assert_close(remote["logits"], out.logits, msg=folder_name)
        for name in fields:
            torch.testing.assert_close(remote[name], getattr(out, name), rtol=0, atol=1e-6, msg=name)


def test_every_technique_has_a_remote_code_case():
    assert (
        {case.technique for case in REMOTE_CASES} == {case.technique for case in CASES} == set(adaptive_hf.TECHNIQUES)
    )


# ------------------------------------------------------------------------------------------------------ training
def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def seeded_loss(model, batch, labels):
    torch.manual_seed(0)  # the same sampled decisions (Gumbel, REINFORCE, jitter) in both forwards
    return model(**batch, labels=labels)


@pytest.mark.parametrize("case", case_params())
def test_training_loss_includes_the_auxiliary_terms(case):
    model = no_dropout(case.build()).train()
    batch = case.batch(4, seed=2)
    labels = case.labels(batch)
    with_aux = seeded_loss(model, batch, labels)
    assert with_aux.loss.dim() == 0 and torch.isfinite(with_aux.loss)
    aux_off = case.aux_off_settings(model)
    with config_values(model, aux_off):
        without = seeded_loss(model, batch, labels)
    if case.loss_is_task_loss_without_aux:
        task = torch.nn.functional.cross_entropy(without.logits, labels)
        torch.testing.assert_close(without.loss, task, rtol=1e-5, atol=1e-6)
    if any(getattr(model.config, name) for name in aux_off):  # some auxiliary term is on for this model
        assert not torch.allclose(with_aux.loss, without.loss), f"the loss ignores {sorted(aux_off)}"
    with_aux.loss.backward()
    for prefix in case.aux_parameters:
        grads = [p.grad for name, p in model.named_parameters() if name.startswith(prefix) and p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), prefix


@pytest.mark.parametrize("case", case_params(lambda case: case.trainer_step))
def test_one_stock_trainer_step(case, tmp_path):
    from transformers import Trainer

    model = case.build().train()
    batch = case.batch(4, seed=5)
    labels = case.labels(batch)
    rows = [{**{k: v[i] for k, v in batch.items()}, "labels": labels[i]} for i in range(4)]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = cpu_training_args(
        tmp_path, per_device_train_batch_size=4, max_steps=1, learning_rate=1e-2, remove_unused_columns=False
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()
    moved = {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert moved
    for prefix in case.aux_parameters:
        assert any(name.startswith(prefix) for name in moved), prefix


# ---------------------------------------------------------------------------------------------------- bad input
def assert_library_error(call, pattern: str | None = None):
    """``call()`` raises a ValueError/TypeError from adaptive_hf's own code (not from torch, timm or transformers)."""
    with pytest.raises((ValueError, TypeError), match=pattern) as info:
        call()
    raised_in = str(info.traceback[-1].path)
    assert raised_in.startswith(PACKAGE_DIR), f"{info.type.__name__} raised in {raised_in}: {info.value}"
    return info.value


def _with(batch, **changes):
    return {**batch, **changes}


def _main_input(case, batch):
    return "input_ids" if case.token_inputs else "pixel_values"


def probe_empty_batch(case, model, batch):
    assert_library_error(lambda: model(**{k: v[:0] for k, v in batch.items()}))


def probe_input_rank(case, model, batch):
    key = _main_input(case, batch)
    assert_library_error(lambda: model(**_with(batch, **{key: batch[key][0]})), key)


def probe_input_dtype(case, model, batch):
    key = _main_input(case, batch)
    wrong = batch[key].float() if case.token_inputs else (batch[key] * 10).to(torch.uint8)
    assert_library_error(lambda: model(**_with(batch, **{key: wrong})), key)


def probe_labels_length(case, model, batch):
    labels = torch.zeros(next(iter(batch.values())).size(0) + 1, dtype=torch.long)
    assert_library_error(lambda: model(**batch, labels=labels), "labels")


def probe_float_labels(case, model, batch):
    assert_library_error(lambda: model(**batch, labels=case.labels(batch).float()), "labels")


def probe_labels_2d(case, model, batch):
    assert_library_error(lambda: model(**batch, labels=case.labels(batch)[:, None]), "labels")


def probe_labels_out_of_range(case, model, batch):
    labels = torch.full_like(case.labels(batch), model.config.num_labels)
    assert_library_error(lambda: model(**batch, labels=labels), "labels")


def probe_ids_out_of_range(case, model, batch):
    ids = batch["input_ids"].clone()
    ids[-1, -1] = case.vocab_size  # in a padded position of the last (shortest) row
    assert_library_error(lambda: model(**_with(batch, input_ids=ids)), "vocab_size")


def probe_negative_ids(case, model, batch):
    ids = batch["input_ids"].clone()
    ids[0, 0] = -1
    assert_library_error(lambda: model(**_with(batch, input_ids=ids)), "input_ids")


def probe_ids_3d(case, model, batch):
    assert_library_error(lambda: model(**_with(batch, input_ids=batch["input_ids"][..., None])), "input_ids")


def probe_runtime_knobs(case, model, batch):
    """Every declared knob and full-compute field, set to a value of the wrong kind, is named in the error."""
    spec = adaptive_hf.technique_of(model)
    fields = {knob.field: knob.when for knob in spec.knobs_for(model.config)}
    fields |= {name: {} for name in spec.full_compute_settings(model.config)}
    assert fields or spec.name == "switch_moe"
    if spec.name == "switch_moe":  # no knob to calibrate: the routing settings are checked at every forward
        fields = {"capacity_factor": {}, "capacity_group": {}}
    for name, when in fields.items():
        with config_values(model, {**when, name: "bogus"}):
            assert_library_error(lambda: model(**batch), name)
        with torch.no_grad():
            model(**batch)  # restored


TEXT_PROBES = ("ids_out_of_range", "negative_ids", "ids_3d")
LABEL_PROBES = ("labels_length", "float_labels", "labels_2d", "labels_out_of_range")
PROBES = ("empty_batch", "input_rank", "input_dtype", "runtime_knobs") + LABEL_PROBES + TEXT_PROBES


def probe_params():
    params = []
    for case in CASES:
        for probe in PROBES:
            if probe in TEXT_PROBES and not case.token_inputs:
                continue
            if probe in LABEL_PROBES and case.labels_from_ids:
                continue
            params.append(pytest.param(case, probe, id=f"{case.name}-{probe}"))
    return params


@pytest.mark.parametrize(("case", "probe"), probe_params())
def test_bad_input_gets_a_clear_error(case, probe):
    model = case.shared_model()
    batch = case.batch(3, seed=4)
    globals()[f"probe_{probe}"](case, model, batch)
