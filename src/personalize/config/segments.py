"""Typed configuration of user segmentation (the ``segments:`` block of an experiment file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from personalize.config.base import StrictModel
from personalize.config.device import DEVICE_HELP, Device

Block = Literal["behaviour", "demographics", "taste"]


class ProfileConfig(StrictModel):
    """The profile table and its scaling (``personalize.features.profile_table``)."""

    blocks: list[Block] = Field(
        default_factory=lambda: ["behaviour", "demographics", "taste"],
        description="Feature blocks segments are found in (the documented full profile by default).",
    )
    embedding: bool = Field(
        default=True, description="Include the mean sentence embedding of the items consumed (taste)."
    )
    embedding_components: int = Field(default=8, ge=1, description="PCA components of the embedding.")
    device: Device = Field(
        default="cpu", description="Sentence encoder of the embedding (when not cached). " + DEVICE_HELP
    )
    write: bool = Field(
        default=True,
        description="Write the profile table (Parquet, with its fingerprint) to data/processed/.",
    )


class ClusteringConfig(StrictModel):
    """How the number of segments is chosen and how stable it must be."""

    methods: list[Literal["kmeans", "ward"]] = Field(
        default_factory=lambda: ["kmeans", "ward"], description="Clustering methods compared."
    )
    method: Literal["kmeans", "ward"] = Field(
        default="kmeans", description="The method whose segments are used (labels, evaluation, export)."
    )
    k: int | None = Field(
        default=None,
        ge=2,
        description="A fixed number of segments (the one a segmentation study chose): no selection "
        "table, much faster (null: choose k by the rule below).",
    )
    ks: list[int] = Field(
        default_factory=lambda: list(range(2, 9)), description="Numbers of segments scored (plotted)."
    )
    choose_from: tuple[int, int] = Field(
        default=(4, 6),
        description="The range k is chosen from (inclusive): the highest silhouette among the ks in it "
        "whose bootstrap stability reaches min_stability, else the most stable one (reported).",
    )
    min_stability: float = Field(
        default=0.8, ge=0, le=1, description="Bootstrap adjusted Rand index a chosen k should reach."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4], description="Seeds for the stability across seeds."
    )
    bootstrap: int = Field(default=20, ge=2, description="Bootstrap resamples for the stability.")
    n_init: int = Field(default=20, ge=1, description="K-Means restarts per fit.")

    @model_validator(mode="after")
    def _range_in_ks(self) -> ClusteringConfig:
        lo, hi = self.choose_from
        if lo > hi or not any(lo <= k <= hi for k in self.ks):
            raise ValueError(f"choose_from {list(self.choose_from)} holds none of ks {self.ks}")
        if any(k < 2 for k in self.ks):
            raise ValueError(f"ks must be >= 2, got {self.ks}")
        return self


class AutoencoderConfig(StrictModel):
    """The autoencoder route: an autoencoder over each user's interaction vector, its latent space
    clustered, compared with clustering the profile (silhouette in the profile space)."""

    enabled: bool = Field(default=True, description="Run the autoencoder route.")
    latent: int = Field(default=16, ge=2, description="Latent dimension.")
    hidden: int = Field(default=256, ge=4, description="Hidden layer width.")
    epochs: int = Field(default=40, ge=1, description="Training epochs.")
    learning_rate: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=128, ge=1)
    device: Device = Field(default="cpu", description=DEVICE_HELP)
    keep_margin: float = Field(
        default=0.05,
        ge=0,
        description="The route is kept only if its silhouette beats K-Means on the profile by this "
        "much at equal stability.",
    )
    refit_bootstrap: bool = Field(
        default=False,
        description="Retrain the autoencoder on every bootstrap resample (the stability of the whole "
        "route, bootstrap trainings); false: keep the latent space and re-cluster resamples of it "
        "(the stability of its clustering, a few seconds).",
    )


class ClassifierConfig(StrictModel):
    """The segment classifier (dynamic labels) and its temporal evaluation."""

    first_n: list[int] = Field(
        default_factory=lambda: [5, 10, 20], description="Interactions a user has made when labelled."
    )
    train_share: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Temporal split: the share of users who joined earliest, trained on; the later "
        "users are the test set.",
    )
    max_iter: int = Field(default=200, ge=1, description="Boosting iterations.")
    learning_rate: float = Field(default=0.1, gt=0)
    max_leaf_nodes: int = Field(default=15, ge=2)
    calibration_bins: int = Field(default=10, ge=2)
    embedding_components: int = Field(
        default=8,
        ge=0,
        description="PCA components of the mean item embedding among the classifier's features, fitted "
        "on the training users (0: the embedding is left out).",
    )
    early_stopping: bool = Field(
        default=True,
        description="Stop boosting once the log-loss on validation_fraction of the training users has not "
        "improved for n_iter_no_change iterations (max_iter is then a cap): a few hundred users are "
        "overfitted by max_iter full iterations and the probabilities become over-confident.",
    )
    validation_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="Share of the training users held out for early stopping."
    )
    n_iter_no_change: int = Field(
        default=10, ge=1, description="Iterations without improvement that stop boosting (early stopping)."
    )


class DescribeConfig(StrictModel):
    """How segments are described and what their content strategy lists."""

    top_items: int = Field(default=5, ge=1, description="Items listed per segment and strategy.")
    min_support: int = Field(
        default=10, ge=1, description="Interactions an item needs in a segment to be called distinctive."
    )
    top_genres: int = Field(default=3, ge=1, description="Genres listed per segment (by lift and by share).")
    top_demographics: int = Field(
        default=2, ge=1, description="Age buckets and occupations listed per segment (by share)."
    )
    min_genre_share: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Share of a segment's consumption a genre needs to be ranked by lift (rare genres "
        "have noisy lifts).",
    )
    min_demographic_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of a segment's users a demographic value needs to count as over-represented.",
    )
    name_min_lift: float = Field(
        default=1.5,
        gt=0,
        description="Lift the most over-represented demographic needs to enter a segment's name.",
    )
    name_min_genre_lift: float = Field(
        default=1.2,
        gt=0,
        description="Lift a segment's top genre needs to name it ('<genre> fans'); below, the segment "
        "reads 'Broad-taste'.",
    )
    new_window_days: float = Field(
        default=30.0,
        gt=0,
        description="'New to segment': the window before the cut-off in which items count as recently "
        "popular (days).",
    )
    new_pool: int = Field(
        default=50, ge=1, description="'New to segment': how many recently popular items are candidates."
    )


class SegmentsConfig(StrictModel):
    """User segmentation: profiles, clustering, the autoencoder route, the classifier, descriptions."""

    enabled: bool = Field(
        default=False,
        description="Segment users in `personalize run` (needed by evaluation.by: segment and the "
        "segment-aware models); `personalize segment` always does.",
    )
    seed: int = Field(default=0, description="Seed of the chosen segmentation.")
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    clustering: ClusteringConfig = Field(default_factory=ClusteringConfig)
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
