"""The evaluation protocol as shipped with the package (logged beside every run's metrics)."""

from __future__ import annotations

from importlib import resources


def protocol_text() -> str:
    """The text of ``PROTOCOL.md`` (the protocol and how this package applies it)."""
    return resources.files("personalize.evaluation").joinpath("PROTOCOL.md").read_text()
