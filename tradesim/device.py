"""The project's one device choice (cuda > mps > cpu), overridable by name.

QTNet's torch models and the local LLM runtimes (llama.cpp layer offload, transformers) all ask
here, so a run uses one device whichever part of the project computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tradesim.errors import ConfigError

if TYPE_CHECKING:
    import torch


def pick_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or None) -> cuda if available, else mps, else cpu; any other name must be
    usable here."""
    import torch

    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r} is not a torch device ({exc}); use auto, cpu, cuda, "
                          "cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use "
                          "--device auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for but MPS is not available; use auto or cpu")
    return device
