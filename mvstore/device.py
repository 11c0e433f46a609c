"""One place that turns ``"auto" | "cpu" | "cuda[:N]"`` into a device.

torch is optional: the CPU paths are numpy, and ``pip install mvstore`` does not install torch.
:func:`device_name` resolves a device to ``"cpu"`` / ``"cuda[:N]"`` without importing torch for ``"cpu"``;
``"auto"`` asks torch for a GPU only when torch is installed (without torch no GPU can be used, so
``"auto"`` is the CPU). :func:`resolve_device` gives the ``torch.device`` the torch paths run on. Asking for
a torch feature without torch raises :class:`~mvstore.exceptions.MissingDependencyError` with the pip
command. Nothing here touches CUDA at import time. An explicit ``"cuda"`` without a GPU is an error, never
a silent fallback to the CPU.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .exceptions import DeviceUnavailableError, MissingDependencyError

__all__ = [
    "device_name",
    "resolve_device",
    "cuda_available",
    "torch_installed",
    "require_torch",
    "TORCH_CPU_HINT",
]

#: how PyTorch's install page gets the CPU-only build (the default wheel on Linux is the CUDA one)
TORCH_CPU_HINT = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def torch_installed() -> bool:
    """Whether torch can be found, without importing it."""
    return importlib.util.find_spec("torch") is not None


def require_torch(feature: str, extra: str | None = None) -> Any:
    """Import torch for ``feature`` or raise MissingDependencyError with the pip command that installs it
    (``pip install "mvstore[extra]"`` when the feature belongs to an extra, else ``pip install torch``)."""
    try:
        import torch
    except ImportError as e:
        cmd = f'`pip install "mvstore[{extra}]"`' if extra else "`pip install torch`"
        if extra != "gpu":
            cmd += f" (on a machine without a GPU, first `{TORCH_CPU_HINT}`: PyTorch's CPU-only build)"
        raise MissingDependencyError(
            f"{feature} needs torch, which is not installed ({e}): run {cmd}; "
            "the CPU search itself needs no torch: device='cpu' or 'auto'"
        ) from e
    return torch


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (False without torch: no GPU can be used then)."""
    if not torch_installed():
        return False
    return bool(require_torch("checking for a CUDA GPU").cuda.is_available())


def device_name(device: Any = "auto") -> str:
    """Validate ``device`` and resolve it to ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``"cpu"`` never imports torch; ``"auto"`` is ``"cuda"`` when torch is installed and sees a GPU, else
    ``"cpu"``; ``"cuda[:N]"`` needs torch and that GPU. A ``torch.device`` is taken as its string.

    >>> device_name("cpu")
    'cpu'
    """
    if device is None or device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if type(device).__module__.startswith("torch"):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {type(device).__name__}")
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        torch = require_torch(f"device={device!r}", extra="gpu")
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device={device!r} was requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' or device='auto'"
            )
        d = torch.device(device)
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:N]'")


def resolve_device(device: Any = "auto", *, feature: str = "this torch code path", extra: str | None = None):
    """The ``torch.device`` for ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda[:N]"``, for code
    that runs on torch; without torch, MissingDependencyError naming ``feature`` (and ``extra``, its extra).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = device_name(device)
    return require_torch(f"{feature} (device={name!r})", extra=extra).device(name)
