"""Hub round trip: atomic safetensors saves that carry their own code, model cards, and ``push_to_hub``.

``trust_remote_code`` loading copies the module named in ``auto_map`` and its same-folder relative imports, and
nothing else. A saved folder therefore carries a flat copy of the package modules the model needs: each
``adaptive_hf.a.b`` module is written as ``ahf_a_b.py`` with its package imports rewritten to same-folder
relative imports. Package modules that a model uses import each other only as ``from <module> import <names>``,
never through ``adaptive_hf/__init__`` (which registers Auto classes and pulls in everything). Imports inside
functions are followed too, so a bundled module must not lazily import the registry or other techniques either:
registration code lives in modules that no saved model imports (e.g. ``<technique>/auto.py``).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .configuration import check_structure_unchanged, freeze_structural_fields
from .layer_keyed import check_layer_keyed_weights
from .technique import technique_of

PACKAGE = "adaptive_hf"
FLAT_PREFIX = "ahf_"
_IMPORT_RE = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+(?P<module>\.+[\w.]*|adaptive_hf(?:\.[\w.]+)?)[ \t]+import\b", re.M
)


def flat_module_name(module_name: str) -> str:
    """The file stem a package module gets inside a saved folder (``adaptive_hf.core.hub`` -> ``ahf_core_hub``).

    Args:
        module_name: Absolute module name inside the package, or an already flat remote-code module name.
    """
    if module_name.startswith(PACKAGE + "."):
        return FLAT_PREFIX + module_name[len(PACKAGE) + 1 :].replace(".", "_")
    return module_name.rsplit(".", 1)[-1]


def _resolve(module: str, importer: str, importer_is_package: bool) -> str:
    if not module.startswith("."):
        return module
    level = len(module) - len(module.lstrip("."))
    base = importer.split(".") if importer_is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    rest = module.lstrip(".")
    return ".".join(base + ([rest] if rest else []))


def _bundle_sources(root_modules: list[str]) -> dict[str, str]:
    """Flattened sources of ``root_modules`` and every package module they import, keyed by file name."""
    files: dict[str, str] = {}
    pending = list(root_modules)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        # A lazily imported module may not be loaded yet: load it to find its file.
        module = sys.modules.get(name) or importlib.import_module(name)
        path = Path(module.__file__)
        if not name.startswith(PACKAGE + "."):
            # A model loaded through trust_remote_code: its folder already holds the flat bundle.
            for sibling in path.parent.glob(FLAT_PREFIX + "*.py"):
                files[sibling.name] = sibling.read_text()
            continue
        if path.name == "__init__.py":
            raise RuntimeError(f"{name} is a package; bundled modules must import modules, not packages.")
        source = path.read_text()

        def rewrite(match: re.Match, name: str = name) -> str:
            target = _resolve(match.group("module"), name, importer_is_package=False)
            if target == PACKAGE or not target.startswith(PACKAGE + "."):
                raise RuntimeError(f"{name} imports {target!r}; bundled modules may import only package modules.")
            pending.append(target)
            return f"{match.group('indent')}from .{flat_module_name(target)} import"

        files[flat_module_name(name) + ".py"] = _IMPORT_RE.sub(rewrite, source)
    return files


def write_code_bundle(save_directory: str | os.PathLike, root_modules: list[str]) -> list[str]:
    """Writes the flat code bundle for ``root_modules`` into ``save_directory``.

    Args:
        save_directory: Folder of a saved model.
        root_modules: Modules that define the saved classes (usually the model's and the config's).

    Returns:
        The file names written.
    """
    files = _bundle_sources(root_modules)
    for file_name, source in files.items():
        Path(save_directory, file_name).write_text(source)
    return sorted(files)


# Files a save writes: an old copy of any of them in the target folder belongs to the previous checkpoint and is
# dropped by the swap. Everything else there (a tokenizer, training_args.bin, checkpoint-* folders) is carried over.
_OWNED_PATTERNS = ("config.json", "generation_config.json", "README.md", "model*.safetensors*", FLAT_PREFIX + "*.py")
_RENAME_EXCHANGE = 2  # linux/fs.h: atomically exchange two paths


def _exchange_paths(first: Path, second: Path) -> bool:
    """Atomically swaps two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(first), None, str(second))


def _is_owned(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in _OWNED_PATTERNS)


def _carry_over_foreign_files(target: Path, staging: Path) -> None:
    """Hard-links (or copies) into ``staging`` what the old ``target`` holds that this save does not write."""
    for path in target.iterdir():
        destination = staging / path.name
        if destination.exists() or _is_owned(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.copytree(path, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(path, destination)


def _link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _working_directory() -> Path | None:
    try:
        return Path(os.getcwd())
    except FileNotFoundError:  # already deleted
        return None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _leftover_prefixes(target: Path) -> tuple[str, str]:
    return f".{target.name}.partial-", f".{target.name}.old-"


def _owner_is_alive(leftover: Path, prefix: str) -> bool:
    pid_text = leftover.name[len(prefix) :].split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_save_leftovers(target: str | os.PathLike) -> list[Path]:
    """Removes the staging and old-copy folders that an interrupted save of ``target`` left next to it.

    Folders of a save still running in another live process are kept. When a save was killed after moving the old
    folder aside and before moving the new one in, the old folder is moved back.

    Args:
        target: The save folder.

    Returns:
        The folders removed.
    """
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for prefix in _leftover_prefixes(target):
        for leftover in target.parent.glob(glob_escape(prefix) + "*"):
            if not leftover.is_dir() or _owner_is_alive(leftover, prefix):
                continue
            if prefix.endswith(".old-") and not target.exists():
                # Killed between the two renames of the portable swap: the old checkpoint comes back.
                os.rename(leftover, target)
                continue
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters ``*?[`` escaped, for a literal prefix in ``Path.glob``."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def new_staging_folder(target: str | os.PathLike) -> Path:
    """Creates the sibling folder a save of ``target`` is written into before :func:`swap_in_folder`.

    Args:
        target: The save folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_leftover_prefixes(target)[0]}{os.getpid()}-", dir=target.parent))


def swap_in_folder(staging: Path, target: Path) -> None:
    """Replaces the folder ``target`` by the complete folder ``staging`` so that a reader sees one or the other.

    On Linux the two folders are exchanged by one ``renameat2(RENAME_EXCHANGE)``, so at every instant ``target`` is
    exactly the old checkpoint or exactly the new one. Elsewhere the old folder is renamed aside and the new one
    renamed in; a crash between the two renames leaves no ``target`` (never a mix) and the next save cleans up.
    Files of the old folder that the save does not write (a tokenizer, ``training_args.bin``) are carried over;
    stale weights shards and ``ahf_*.py`` files are not.

    Args:
        staging: The fully written new folder, a sibling of ``target``.
        target: The save folder.
    """
    if not target.exists():
        os.rename(staging, target)
        return
    _carry_over_foreign_files(target, staging)
    if _exchange_paths(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old checkpoint
        return
    old = Path(tempfile.mkdtemp(prefix=f"{_leftover_prefixes(target)[1]}{os.getpid()}-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def own_loaded_tensors(loaded: Any) -> Any:
    """Copies every CPU parameter and buffer of a freshly loaded model into its own aligned memory.

    Safetensors loads can leave tensors as views into the file buffer at unaligned offsets. oneDNN and the SIMD
    matmul paths then pick other kernels whose results differ in the last bits, so a reloaded model would not compute
    bit for bit what the saved one did. Call it on what ``PreTrainedModel.from_pretrained`` returned.

    Args:
        loaded: The model, or the ``(model, loading_info)`` tuple of ``output_loading_info=True``.

    Returns:
        ``loaded``, with the model's tensors copied in place.
    """
    import torch

    model = loaded[0] if isinstance(loaded, tuple) else loaded
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()
    return loaded


def calibration_card_section(summary: dict[str, Any] | None, has_knobs: bool = True) -> str:
    """The model card's calibration section: the guarantee in one sentence, then the Pareto table.

    Args:
        summary: ``config.calibration`` as ``adaptive_hf.calibrate`` stores it (``None`` when not calibrated).
        has_knobs: Whether the model has runtime knobs to calibrate (no section for a model without any).
    """
    if not summary:
        if not has_knobs:
            return ""
        return (
            "\n## Calibration\n\nNot calibrated yet: run `adaptive_hf.calibrate(model, data, "
            "max_accuracy_drop=0.005, delta=0.1)` (or `max_disagreement=` on unlabelled data).\n"
        )
    statement = summary.get("statement") or f"Calibrated with `{summary.get('criterion')}` (no statement recorded)."
    lines = ["", "## Calibration", "", statement, ""]
    rows = summary.get("candidates") or []
    if rows and all("setting" in row for row in rows):
        lines += [
            "| setting | accuracy | disagreement | risk upper bound | certified | theoretical speedup |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            setting = ", ".join(f"{k}={v!r}" for k, v in row["setting"].items()) or "full compute"
            accuracy = "-" if row.get("accuracy") is None else f"{row['accuracy']:.4f}"
            lines.append(
                f"| {setting} | {accuracy} | {row.get('disagreement', 0.0):.4f} | {_bound_cell(row)} "
                f"| {'yes' if row.get('certified') else 'no'} | {row.get('theoretical_speedup', 1.0):.2f}x |"
            )
    return "\n".join(lines) + "\n"


def _bound_cell(row: dict) -> str:
    # Candidates the fixed sequence never reached carry no bound (None) for the accuracy drop.
    bound = row.get("upper_bound", 0.0)
    return "-" if bound is None else f"{bound:.4f}"


class AdaptiveHubMixin:
    """Mixin for adaptive ``PreTrainedModel`` classes: atomic saves with code, model card and Hub upload.

    Subclasses set ``auto_class_name`` (e.g. ``"AutoModelForSequenceClassification"``) and may override
    :meth:`model_card_details`.
    """

    auto_class_name: str = "AutoModel"

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, plus a check that the per-layer weights match the config's layers.

        Args:
            *args: Passed to ``PreTrainedModel.from_pretrained``.
            **kwargs: Passed to ``PreTrainedModel.from_pretrained``.

        Raises:
            ValueError: When exit heads, halting units or routers in the checkpoint belong to other layers than the
                config lists (see :func:`~adaptive_hf.core.layer_keyed.check_layer_keyed_weights`).
        """
        wants_info = kwargs.get("output_loading_info", False)
        kwargs["output_loading_info"] = True
        model, info = super().from_pretrained(*args, **kwargs)
        check_layer_keyed_weights(model, info)
        return (model, info) if wants_info else model

    def post_init(self):
        """``PreTrainedModel.post_init``, then freezes the config's structural fields: the modules now depend on them.

        Changing one afterwards raises an error that says to rebuild the model (see
        :func:`~adaptive_hf.core.configuration.freeze_structural_fields`); runtime knobs stay changeable.
        """
        super().post_init()
        try:
            spec = technique_of(self.config)
        except TypeError:
            return  # a remote-code copy without the technique registry: nothing declares the structure
        freeze_structural_fields(self.config, spec.structural_fields)

    def _auto_map(self) -> dict[str, str]:
        config_class = type(self.config)
        return {
            "AutoConfig": f"{flat_module_name(config_class.__module__)}.{config_class.__name__}",
            self.auto_class_name: f"{flat_module_name(type(self).__module__)}.{type(self).__name__}",
        }

    def _has_runtime_knobs(self) -> bool:
        from .technique import technique_of

        try:
            return bool(technique_of(self).knobs_for(self.config))
        except TypeError:
            return False

    def model_card_details(self) -> tuple[list[str], str]:
        """Tags and a markdown body describing the technique's settings. Subclasses extend this."""
        return ["adaptive-hf"], ""

    def model_card(self, tags: list[str] | None = None) -> str:
        """The model card (README.md) written next to the weights.

        Args:
            tags: Extra Hub tags.
        """
        from huggingface_hub import ModelCardData

        own_tags, body = self.model_card_details()
        body += calibration_card_section(getattr(self.config, "calibration", None), self._has_runtime_knobs())
        all_tags = list(dict.fromkeys(own_tags + list(tags or [])))
        data = ModelCardData(library_name="transformers", tags=all_tags, pipeline_tag=self.pipeline_tag())
        name = type(self).__name__
        usage = (
            "## Usage\n\n```python\nfrom transformers import " + self.auto_class_name + "\n\n"
            f'model = {self.auto_class_name}.from_pretrained("<this repo>", trust_remote_code=True)\n'
            "# or, with adaptive_hf installed: import adaptive_hf first and drop trust_remote_code\n```\n"
        )
        return (
            f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n"
            f"An adaptive-computation model built with adaptive_hf ({name}, backbone `{self.config.model_type}`).\n\n"
            f"{body}\n{usage}"
        )

    def pipeline_tag(self) -> str | None:
        """The Hub pipeline tag for the card."""
        return None

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, tags: list[str] | None = None, **kwargs):
        """Saves weights (safetensors), config with ``auto_map``, the code bundle and the model card.

        Everything is written to a sibling staging folder, which then replaces ``save_directory`` as a whole (see
        :func:`swap_in_folder`): a reader, or a crash at any point, sees exactly the old checkpoint or exactly the
        new one, never new weights with an old config. Leftovers of an interrupted earlier save are removed first.

        Args:
            save_directory: Target folder.
            tags: Extra tags for the model card.
            *args: Passed to ``PreTrainedModel.save_pretrained``.
            **kwargs: Passed to ``PreTrainedModel.save_pretrained`` (``push_to_hub`` goes through
                :meth:`push_to_hub`).
        """
        check_structure_unchanged(self.config)  # never write a config.json that disagrees with the weights
        if kwargs.get("safe_serialization", True) is False:
            raise ValueError("`safe_serialization=False` is not supported: adaptive_hf saves safetensors only.")
        kwargs.pop("safe_serialization", None)
        push = kwargs.pop("push_to_hub", False)
        repo_id = kwargs.pop("repo_id", None)
        # The real path: "." has no name to stage a sibling of, and a symlinked folder must be swapped where it
        # really lies, not replaced by a folder at the link's place.
        target = Path(os.path.realpath(save_directory))
        if target.exists() and not target.is_dir():
            raise ValueError(f"`save_directory` must be a folder; {str(target)!r} is a file.")
        remove_save_leftovers(target)
        staging = new_staging_folder(target)
        try:
            self.config.auto_map = self._auto_map()
            super().save_pretrained(staging, *args, **kwargs)
            write_code_bundle(staging, [type(self).__module__, type(self.config).__module__])
            (staging / "README.md").write_text(self.model_card(tags))
            cwd = _working_directory()
            swap_in_folder(staging, target)
            # The working directory left with the old folder: enter the new one.
            if cwd is not None and _is_within(cwd, target):
                os.chdir(cwd if cwd.is_dir() else target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if push:
            self.push_to_hub(repo_id or target.name, tags=tags)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        tags: list[str] | None = None,
        **kwargs: Any,
    ):
        """Uploads the saved folder (weights, config, code bundle and our model card) to the Hub.

        Args:
            repo_id: Target repository.
            commit_message: Commit message.
            private: Whether a new repository is private.
            token: Hub token.
            revision: Branch to push to.
            create_pr: Whether to open a pull request instead of committing.
            tags: Extra tags for the model card.
            **kwargs: Passed to ``save_pretrained``.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, tags=tags, **kwargs)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                revision=revision,
                create_pr=create_pr,
            )


def read_config_dict(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``config.json`` of a local folder as a dict, or ``None`` when ``path`` is not a local model folder.

    Args:
        path: A local folder or a Hub name.
    """
    config_file = Path(path, "config.json")
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text())
