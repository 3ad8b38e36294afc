"""What each artifact the lab logs holds: per-user data, and how erasure rewrites it, or none.

Every module that logs an artifact declares it, at import, next to the code that writes it
(:func:`declare`): a path pattern (``fnmatch``: ``split/*.parquet`` matches
``split/seed=0/train.parquet`` too, since ``*`` crosses ``/``) as either

- **per-user** (:func:`per_user`): it holds rows, entries or lines of individual users; erasure
  (``personalize subject forget``, :mod:`personalize.tracking.erasure`) rewrites it without the
  person, by its format (:attr:`Artifact.rewrite`: Parquet and CSV by rows, JSON by entries, text
  by lines), or, for a logged model's files, deletes the version and exports the model again
  without them (``refit``); or
- **free of per-user data** (:func:`free`, with why): aggregates, figures, configs, texts.
  Erasure does not rewrite it (so that erasing user ``12`` of a numeric dataset leaves a
  leaderboard row holding the number 12 alone), but still checks its bytes for the person's
  longer IDs (a pseudonym, a distinctive string ID): a declaration that turns out wrong is
  rewritten all the same and named in the erasure log.

Two scopes: ``run`` (a run's artifacts, paths relative to the run's artifact root) and ``model``
(a logged model's files, relative to the model's artifact location). :class:`~personalize.
tracking.store.RunHandle` looks every logged path up (:func:`check`) and warns about an
undeclared one; a test runs every kind of run the lab logs, lists every artifact in the store,
and fails on an undeclared artifact or on one that still holds an erased user.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

Scope = Literal["run", "model"]
_REWRITE = {".parquet": "rows", ".csv": "rows", ".json": "entries"}


class UndeclaredArtifact(UserWarning):
    """An artifact was logged that no module declared (:mod:`personalize.tracking.artifacts`)."""


@dataclass(frozen=True)
class Artifact:
    """One declared artifact pattern."""

    pattern: str
    per_user: bool
    what: str  # per-user: what it holds of each user; free: why it holds nothing per user
    scope: Scope = "run"
    refit: bool = False  # a logged model's files: erasure deletes the version and exports again
    writer: str = ""  # the declaring module

    @property
    def rewrite(self) -> str | None:
        """How erasure rewrites it: ``rows``, ``entries``, ``lines``, ``refit``; None when free."""
        if not self.per_user:
            return None
        if self.refit:
            return "refit"
        return _REWRITE.get(PurePosixPath(self.pattern).suffix.lower(), "lines")

    def matches(self, path: str, scope: Scope = "run") -> bool:
        return scope == self.scope and fnmatch.fnmatchcase(path, self.pattern)


def per_user(pattern: str, what: str, scope: Scope = "run", refit: bool = False) -> Artifact:
    """An artifact holding per-user data (``what``: what it holds of each user)."""
    return Artifact(pattern, True, what, scope, refit)


def free(pattern: str, why: str, scope: Scope = "run") -> Artifact:
    """An artifact free of per-user data (``why``: what it holds instead)."""
    return Artifact(pattern, False, why, scope)


_DECLARED: list[Artifact] = []
_WARNED: set[str] = set()


def declare(writer: str, *artifacts: Artifact) -> None:
    """Declare the artifacts module ``writer`` logs (called at its import). Declaring a pattern
    again is allowed when it says the same (per-user or free); a contradiction is a
    ValueError."""
    for a in artifacts:
        for known in _DECLARED:
            if known.pattern == a.pattern and known.scope == a.scope and known.per_user != a.per_user:
                raise ValueError(
                    f"artifact {a.pattern!r}: {writer} declares it "
                    f"{'per-user' if a.per_user else 'free of per-user data'}, {known.writer} the opposite"
                )
        entry = Artifact(a.pattern, a.per_user, a.what, a.scope, a.refit, writer)
        if entry not in _DECLARED:
            _DECLARED.append(entry)


def declaration(path: str, scope: Scope = "run") -> Artifact | None:
    """The declaration of ``path`` (the longest matching pattern; per-user wins a tie), or None."""
    found = [a for a in _DECLARED if a.matches(path, scope)]
    if not found:
        return None
    return max(found, key=lambda a: (len(a.pattern.replace("*", "")), a.per_user))


def declared() -> list[Artifact]:
    """Every declaration made so far (by the modules imported)."""
    return list(_DECLARED)


def check(path: str, scope: Scope = "run") -> Artifact | None:
    """:func:`declaration`, warning once (:class:`UndeclaredArtifact`) when ``path`` has none."""
    found = declaration(path, scope)
    if found is None and path not in _WARNED:
        _WARNED.add(path)
        warnings.warn(
            f"artifact {path!r} is logged but no module declared it: declare it in the module that "
            "writes it (personalize.tracking.artifacts.declare: per_user(...) or free(...)); until "
            "then erasure rewrites it by its format",
            UndeclaredArtifact,
            stacklevel=3,
        )
    return found
