"""Where the env's tensors live: parse and check a device name (``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch

#: The device types the env runs on.
DEVICE_TYPES: tuple[str, ...] = ("cpu", "cuda")


def parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` of a supported type, without asking whether it is present.

    Raises ``ValueError`` naming the valid choices for a name torch does not know or a type the env
    does not run on (``mps``, ``tpu``).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unsupported device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"unsupported device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
    return dev


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``; a clear error when CUDA is asked for but absent."""
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev
