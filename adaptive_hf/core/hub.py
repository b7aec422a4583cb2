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


def _replace_directory_contents(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    new_names = {path.name for path in source.iterdir()}
    for stale in target.glob("model*.safetensors*"):
        if stale.name not in new_names:
            stale.unlink()
    for path in source.iterdir():
        destination = target / path.name
        if destination.is_dir() and not path.is_dir():
            shutil.rmtree(destination)
        os.replace(path, destination)


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
                f"| {setting} | {accuracy} | {row.get('disagreement', 0.0):.4f} | {row.get('upper_bound', 0.0):.4f} "
                f"| {'yes' if row.get('certified') else 'no'} | {row.get('theoretical_speedup', 1.0):.2f}x |"
            )
    return "\n".join(lines) + "\n"


class AdaptiveHubMixin:
    """Mixin for adaptive ``PreTrainedModel`` classes: atomic saves with code, model card and Hub upload.

    Subclasses set ``auto_class_name`` (e.g. ``"AutoModelForSequenceClassification"``) and may override
    :meth:`model_card_details`.
    """

    auto_class_name: str = "AutoModel"

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

        Everything is written to a temporary sibling folder first and moved into place only when complete, so a
        failure never leaves a half-written checkpoint.

        Args:
            save_directory: Target folder.
            tags: Extra tags for the model card.
            *args: Passed to ``PreTrainedModel.save_pretrained``.
            **kwargs: Passed to ``PreTrainedModel.save_pretrained`` (``push_to_hub`` goes through
                :meth:`push_to_hub`).
        """
        if kwargs.get("safe_serialization", True) is False:
            raise ValueError("`safe_serialization=False` is not supported: adaptive_hf saves safetensors only.")
        kwargs.pop("safe_serialization", None)
        push = kwargs.pop("push_to_hub", False)
        repo_id = kwargs.pop("repo_id", None)
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise ValueError(f"`save_directory` must be a folder; {str(target)!r} is a file.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            self.config.auto_map = self._auto_map()
            super().save_pretrained(staging, *args, **kwargs)
            write_code_bundle(staging, [type(self).__module__, type(self.config).__module__])
            (staging / "README.md").write_text(self.model_card(tags))
            _replace_directory_contents(staging, target)
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
