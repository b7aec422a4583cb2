"""Exit heads; they live in :mod:`adaptive_hf.core.heads`, which halting shares."""

from ..core.heads import EXIT_HEADS, ExitHead

__all__ = ["EXIT_HEADS", "ExitHead"]
