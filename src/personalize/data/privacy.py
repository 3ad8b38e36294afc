"""Personal-data primitives applied at ingestion: keys, pseudonyms, the suppression list.

- **Keys** (:func:`load_key`): from an environment variable, else a key file; at least 16 bytes
  (a hex string is decoded). A key is never logged, written into an output or shipped with a model;
  errors name the variable and the file, never the value.
- **Pseudonyms** (:class:`Pseudonymiser`): ``"u_" + HMAC-SHA256(key, canonical ID)[:32 hex]``
  (128 bits). The canonical ID is the string form ingestion reconciles IDs to (``7`` and ``"007"``
  are one user before pseudonymisation). Without the key, a pseudonym cannot be linked back by
  enumerating candidate IDs, unlike a plain SHA-256 of the ID.
- **The suppression list** (:class:`SuppressionList`): users who asked to be forgotten. Each entry
  is ``HMAC-SHA256(suppression key, canonical ID)``, under a key of its own, so the list holds
  neither the ID nor its pseudonym; every ingestion drops the rows of listed users before anything
  is written (quarantine included).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from personalize.config.privacy import KeySource
from personalize.core.errors import ConfigError, DataError
from personalize.core.paths import data_dir, project_root

PSEUDONYM_PREFIX = "u_"
MIN_KEY_BYTES = 16


def resolve(path: Path) -> Path:
    """An absolute path; a relative one under ``data/`` follows the data folder
    (``PERSONALIZE_DATA_DIR``), any other relative path the project root."""
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "data":
        return data_dir().joinpath(*path.parts[1:])
    return project_root() / path


def load_key(source: KeySource, what: str) -> bytes:
    """The key of ``source``: the environment variable, else the key file. ConfigError when
    neither gives at least 16 bytes (the message names where it looked, never a value)."""
    text = os.environ.get(source.env)
    origin = f"environment variable {source.env}"
    if not text and source.file is not None:
        path = resolve(source.file)
        if not path.exists():
            raise ConfigError(f"{what}: {source.env} is not set and the key file {path} does not exist")
        text = path.read_text().strip()
        origin = f"key file {path}"
    if not text:
        where = f" or the key file {resolve(source.file)}" if source.file is not None else ""
        raise ConfigError(
            f"{what} needs a key: set the environment variable {source.env}{where} "
            "(for example: export {env}=$(python -c 'import secrets; print(secrets.token_hex(32))'))".format(
                env=source.env
            )
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{what}: the key from the {origin} is shorter than {MIN_KEY_BYTES} bytes")
    return key


def canonical(value: object) -> str:
    """The string an ID is keyed by (integers without leading zeros, strings as they are)."""
    if isinstance(value, bool):
        raise DataError(f"an ID cannot be a boolean, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def keyed_digest(key: bytes, value: object) -> str:
    """HMAC-SHA256 of the canonical ID under ``key`` (hex)."""
    return hmac.new(key, canonical(value).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Pseudonymiser:
    """Maps a user ID to its pseudonym under a secret key (module doc)."""

    key: bytes = field(repr=False)

    def __call__(self, value: object) -> str:
        return PSEUDONYM_PREFIX + keyed_digest(self.key, value)[:32]

    def many(self, values) -> list[str]:
        return [self(v) for v in values]


@dataclass
class SuppressionList:
    """Keyed digests of suppressed users, stored as JSON at ``path`` (module doc)."""

    path: Path
    key: bytes | None = field(default=None, repr=False)
    digests: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path, key_source: KeySource) -> SuppressionList:
        """The list at ``path`` (empty when the file does not exist; the key is then only loaded
        if set). A list with entries needs its key."""
        path = resolve(path)
        digests: set[str] = set()
        if path.exists():
            try:
                data = json.loads(path.read_text())
                digests = set(data["entries"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"suppression list {path}: not a suppression list ({exc})") from None
        key = None
        if (
            digests
            or os.environ.get(key_source.env)
            or (key_source.file and resolve(key_source.file).exists())
        ):
            key = load_key(key_source, f"the suppression list {path}")
        return cls(path, key, digests)

    def __len__(self) -> int:
        return len(self.digests)

    def digest(self, value: object) -> str:
        if self.key is None:
            raise ConfigError(f"the suppression list {self.path} has no key loaded")
        return keyed_digest(self.key, value)

    def contains(self, value: object) -> bool:
        return bool(self.digests) and self.digest(value) in self.digests

    def mask(self, values) -> list[bool]:
        """True for each ID on the list."""
        if not self.digests:
            return [False] * len(values)
        return [self.digest(v) in self.digests for v in values]

    def add(self, value: object) -> str:
        """Put a user on the list (idempotent) and save it; returns the entry."""
        entry = self.digest(value)
        self.digests.add(entry)
        self.save()
        return entry

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": 1, "entries": sorted(self.digests)}, indent=1))
        tmp.replace(self.path)
