"""One place that turns ``"auto" | "cpu" | "cuda[:N]"`` into a torch device.

Nothing here touches CUDA at import time. An explicit ``"cuda"`` without a GPU is an error, never a
silent fallback to the CPU.
"""

from __future__ import annotations

from .exceptions import DeviceUnavailableError

__all__ = ["resolve_device", "cuda_available"]


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str | None = "auto"):
    """Return a ``torch.device`` for ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:N]"``.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {type(device).__name__}")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda_available():
            raise DeviceUnavailableError(
                f"device={device!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' or device='auto'"
            )
        d = torch.device(device)
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return d
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")
