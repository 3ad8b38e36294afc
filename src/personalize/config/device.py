"""Where torch work runs: the ``device`` option of the neural models, the segment autoencoder and
the sentence encoder.

- ``cpu`` (the default): today's behaviour, bit for bit;
- ``cuda``: the current CUDA device; asking for it where torch finds none is a
  :class:`~personalize.core.errors.ConfigError` when the work starts (at fit time), naming what
  asked and what torch found;
- ``auto``: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``.

torch is imported only when a device is resolved, so that the configuration stays light.
"""

from __future__ import annotations

from typing import Literal

from personalize.core.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEVICE_HELP = (
    "Where torch runs: cpu (default; reproducible bit for bit), cuda (fails if torch finds no GPU), "
    "or auto (cuda when available, else cpu)."
)


def cuda_found() -> str:
    """What torch reports about CUDA, in words (for error messages)."""
    import torch

    built = torch.version.cuda
    if not built:
        return f"torch {torch.__version__} is built without CUDA"
    return (
        f"torch {torch.__version__} (built for CUDA {built}) sees {torch.cuda.device_count()} CUDA device(s) "
        "and torch.cuda.is_available() is False"
    )


def resolve_device_name(name: str, what: str) -> str:
    """``'cpu'`` or ``'cuda'`` for the option value ``name`` (rules in the module doc); ``what``
    names the model or step that asked, for the error message."""
    if name not in DEVICES:
        raise ConfigError(f"{what}: device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if name == "auto":
        return "cpu"
    raise ConfigError(
        f"{what}: device 'cuda' was requested but no CUDA device was found ({cuda_found()}); "
        "use device 'cpu', or 'auto' to fall back to the CPU"
    )
