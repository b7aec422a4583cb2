"""Atomic checkpoint saves: a crash at any file move leaves exactly the old model or exactly the new one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from text_testers import tiny_backbone_config
from transformers import AutoModelForSequenceClassification

import adaptive_hf  # noqa: F401  (registers the Auto classes)
from adaptive_hf import AutoEarlyExitModelForSequenceClassification
from adaptive_hf.core import hub


class InjectedCrash(RuntimeError):
    pass


def build(seed: int, exit_layers):
    torch.manual_seed(seed)
    return AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=3, exit_layers=exit_layers
    )


def fingerprint(folder: Path) -> tuple:
    """What the folder loads as: the exit layers and every tensor."""
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    return tuple(model.config.exit_layers), {k: v.clone() for k, v in model.state_dict().items()}


def same(first: tuple, second: tuple) -> bool:
    return (
        first[0] == second[0]
        and first[1].keys() == second[1].keys()
        and all(torch.equal(first[1][k], second[1][k]) for k in first[1])
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture(scope="module")
def old_and_new():
    return build(0, [2, 4]), build(1, [1, 2, 3, 4])


class MoveCounter:
    """Wraps the file moves of a save and raises at the ``fail_at``-th one (``None``: never, just count)."""

    def __init__(self, monkeypatch, fail_at: int | None):
        self.calls, self.fail_at = 0, fail_at
        for owner, name in ((os, "rename"), (os, "replace"), (hub, "_exchange_paths")):
            monkeypatch.setattr(owner, name, self.wrap(getattr(owner, name)))

    def wrap(self, move):
        def counted(*args, **kwargs):
            self.calls += 1
            if self.calls - 1 == self.fail_at:
                raise InjectedCrash(f"crash at move {self.fail_at}")
            return move(*args, **kwargs)

        return counted


@pytest.mark.parametrize("exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_error_at_every_move_leaves_old_or_new(tmp_path, monkeypatch, old_and_new, exchange):
    old, new = old_and_new
    if not exchange:  # the portable path: rename the old folder aside, rename the new one in
        monkeypatch.setattr(hub, "_exchange_paths", lambda first, second: False)
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    old_print = fingerprint(folder)
    new.save_pretrained(tmp_path / "reference")
    new_print = fingerprint(tmp_path / "reference")
    with monkeypatch.context() as patch:
        counter = MoveCounter(patch, fail_at=None)
        new.save_pretrained(tmp_path / "count")
        old.save_pretrained(tmp_path / "count")  # the second save of a folder is the one that swaps
        moves = counter.calls // 2 + 1
    assert moves >= 2
    outcomes = []
    for fail_at in range(moves):
        old.save_pretrained(folder)
        with monkeypatch.context() as patch:
            counter = MoveCounter(patch, fail_at)
            crashed = False
            try:
                new.save_pretrained(folder)
            except InjectedCrash:
                crashed = True
        loaded = fingerprint(folder)
        assert same(loaded, old_print) or same(loaded, new_print), f"a mix after a crash at move {fail_at}"
        assert crashed or same(loaded, new_print)
        assert leftovers(folder) == []  # an exception (unlike SIGKILL) cleans its own staging folder
        outcomes.append("new" if same(loaded, new_print) else "old")
    assert "old" in outcomes


def test_swap_drops_stale_files_and_keeps_foreign_ones(tmp_path, old_and_new):
    old, new = old_and_new
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    (folder / "ahf_removed_module.py").write_text("raise ImportError('stale')\n")
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"stale shard")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")
    new.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert "ahf_removed_module.py" not in names and "model-00002-of-00002.safetensors" not in names
    assert (folder / "tokenizer.json").read_text() == "{}"
    assert (folder / "checkpoint-5" / "trainer_state.json").is_file()
    assert fingerprint(folder)[0] == (1, 2, 3, 4)


SIGKILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from text_testers import tiny_backbone_config
    import adaptive_hf
    from adaptive_hf.core import hub

    exchange = hub._exchange_paths

    def killed_after_exchange(first, second):
        exchange(first, second)
        os.kill(os.getpid(), signal.SIGKILL)

    hub._exchange_paths = killed_after_exchange
    torch.manual_seed(1)
    model = adaptive_hf.AutoEarlyExitModelForSequenceClassification.from_config(
        tiny_backbone_config("bert"), num_labels=3, exit_layers=[1, 2, 3, 4])
    model.save_pretrained({folder!r})
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and renameat2 are Linux-specific here")
def test_sigkill_mid_save_leaves_a_whole_model_and_next_save_cleans_up(tmp_path, old_and_new):
    old, _ = old_and_new
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    script = SIGKILL_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert fingerprint(folder)[0] == (1, 2, 3, 4)  # killed after the swap: the new model, whole
    assert len(leftovers(folder)) == 1  # the old checkpoint, left in the staging folder
    old.save_pretrained(folder)
    assert leftovers(folder) == [] and fingerprint(folder)[0] == (2, 4)


def test_video_collator_settings_are_written_atomically(tmp_path, monkeypatch):
    from adaptive_hf.video.data import VideoCollator
    from adaptive_hf.video.evaluation import COLLATOR_FILE, save_video_collator

    collator = VideoCollator(image_size=8, num_channels=1)
    save_video_collator(collator, tmp_path)
    before = (tmp_path / COLLATOR_FILE).read_text()
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(InjectedCrash("crash at the rename")))
    with pytest.raises(InjectedCrash):
        save_video_collator(VideoCollator(image_size=16, num_channels=1), tmp_path)
    assert (tmp_path / COLLATOR_FILE).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [COLLATOR_FILE]


def test_saving_into_the_current_folder_and_through_a_symlink(tmp_path, monkeypatch, old_and_new):
    old, new = old_and_new
    real = tmp_path / "real"
    old.save_pretrained(real)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    new.save_pretrained(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and fingerprint(real)[0] == (1, 2, 3, 4)
    monkeypatch.chdir(real)
    old.save_pretrained(".")
    assert fingerprint(real)[0] == (2, 4) and leftovers(real) == []
    assert Path(os.getcwd()) == real and Path("config.json").is_file()  # still in the (new) folder


def test_portable_swap_killed_between_its_renames_restores_the_old_model(tmp_path, monkeypatch, old_and_new):
    old, new = old_and_new
    folder = tmp_path / "ckpt"
    old.save_pretrained(folder)
    old_print = fingerprint(folder)
    aside = tmp_path / f".ckpt.old-{2**22 + 12345}-x"  # a pid no live process has
    os.rename(folder, aside)  # what a kill between the two renames leaves
    assert hub.remove_save_leftovers(folder) == [] and same(fingerprint(folder), old_print)
    new.save_pretrained(folder)
    assert leftovers(folder) == []
