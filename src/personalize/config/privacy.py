"""The ``data.privacy:`` block: pseudonyms, the suppression list, consent, quasi-identifiers and
the record of processing (plain typed data; the primitives live in :mod:`personalize.data.privacy`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from personalize.config.base import StrictModel


class KeySource(StrictModel):
    """Where a secret key comes from: an environment variable, else a key file kept outside the
    repository. The key is never logged, written or shipped."""

    env: str = Field(description="Environment variable holding the key (hex or text, >= 16 bytes).")
    file: Path | None = Field(
        default=None, description="Key file used when the variable is unset (outside the repository)."
    )


class CoarsenConfig(StrictModel):
    """How quasi-identifiers are coarsened before anything is written."""

    age_band_years: int | None = Field(
        default=None, ge=2, description="Replace age by the lower bound of its band of this width."
    )
    zip_digits: int | None = Field(
        default=None, ge=0, le=5, description="Keep only the first N characters of zip_code (0: drop)."
    )
    drop: list[str] = Field(default_factory=list, description="Quasi-identifier columns removed entirely.")


class RecordConfig(StrictModel):
    """What the record of processing and the notice say (``personalize privacy record``)."""

    controller: str = Field(default="the lab's operator", description="Who decides on the processing.")
    purposes: dict[str, str] = Field(
        default_factory=lambda: {
            "training": "fitting and evaluating recommendation models",
            "personalisation": "recommending items to a user from their own history",
        },
        description="Purpose name -> what it means (consent is recorded per purpose).",
    )
    legal_basis: str = Field(
        default="consent (Art. 6(1)(a) GDPR), per purpose", description="Legal basis of the processing."
    )
    retention_days: int = Field(
        default=365, ge=1, description="How long processed data and run artifacts are kept."
    )
    contact: str = Field(default="the lab's operator", description="Where data subjects send requests.")


class PrivacyConfig(StrictModel):
    """Personal data handling at ingestion (``data.privacy``). Off by default for MovieLens-100K
    (a public dataset): turn ``pseudonymise`` on for real data."""

    pseudonymise: bool = Field(
        default=False,
        description="Replace user IDs at ingestion, before anything is written, by HMAC-SHA256 "
        "pseudonyms under the key of `key` (an error when no key is set).",
    )
    key: KeySource = Field(
        default_factory=lambda: KeySource(env="PERSONALIZE_PSEUDONYM_KEY"),
        description="The pseudonym key.",
    )
    suppression: Path = Field(
        default=Path("data/privacy/suppression.json"),
        description="The suppression list every ingestion applies (users who asked to be forgotten; "
        "entries are keyed digests, holding neither the ID nor its pseudonym).",
    )
    suppression_key: KeySource = Field(
        default_factory=lambda: KeySource(env="PERSONALIZE_SUPPRESSION_KEY"),
        description="The suppression list's own key (needed once the list has entries).",
    )
    consent: Path | None = Field(
        default=None,
        description="Consent table (CSV/Parquet: user_id, purpose, granted, timestamp; the latest "
        "record per user and purpose wins). Null: no consent table, every purpose granted.",
    )
    quasi_identifiers: list[str] = Field(
        default_factory=lambda: ["age", "gender", "occupation", "zip_code"],
        description="User attributes that together could single a person out (k-anonymity).",
    )
    k_target: int | None = Field(
        default=None, ge=2, description="Smallest group size wanted over the quasi-identifiers (reported)."
    )
    coarsen: CoarsenConfig = Field(default_factory=CoarsenConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
