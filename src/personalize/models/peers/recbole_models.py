"""RecBole's models as peers on our split, behind our model contract.

Each peer is a :class:`~personalize.models.base.Recommender` whose ``fit`` hands our training
data to RecBole through :mod:`.recbole_adapter` (RecBole's own model class, trainer, negative
sampler and optimiser) and whose scorer maps RecBole's full-sort scores back to our
catalogue, so every peer row of a leaderboard is computed by OUR evaluator on exactly our
split. Peers take part in comparisons only: ``exportable = False``.

How a peer gets its validation set (the recipe fits on train, monitors on validation, refits
on train + validation):

- Fit on train: the training part is written as RecBole's train file; RecBole's valid and
  test files are left empty. After every RecBole epoch the recipe's
  :class:`~personalize.evaluation.monitor.ValidationMonitor` evaluates the RecBole model on OUR
  validation part with OUR evaluator and applies the experiment's early-stopping rule
  (``training.early_stopping_patience`` on ``training.monitor_metric``, NDCG@10 by default);
  the best epoch's weights are kept. This is the same rule as for every model of ours, and
  gives learning curves in MLflow. RecBole's own early stopping (its valid file, its
  ``valid_metric`` / ``stopping_step``) would stop on the same numbers: the agreement test
  shows its evaluator and ours give identical metrics on the same model and file; it is
  available as :meth:`RecBoleRun.fit_recbole` (used by the benchmark to time "RecBole's
  defaults").
- Refit on train + validation: RecBole trains ``epochs`` = the best epoch, with no validation
  (``selected_config()``), like our iterative models. With ``training.refit: false`` the test
  is run on the model fitted on train (RecBole's own protocol).
- Traditional models (Pop, ItemKNN, EASE) make one pass over the data, as RecBole's
  ``TraditionalTrainer`` does; they are not iterative.

Hyperparameters left at ``None`` take RecBole's documented defaults
(``recbole/properties/overall.yaml`` and ``properties/model/<Model>.yaml``); ``recbole`` passes
any further RecBole key (unknown keys and keys the adapter sets are rejected).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator
from tqdm.auto import tqdm

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender
from personalize.models.peers.recbole_adapter import (
    RESERVED_KEYS,
    RecBoleRun,
    model_defaults,
    pairs_from_matrix,
)


class PeerConfig(ModelConfig):
    """Settings shared by every RecBole peer."""

    recbole_model: ClassVar[str] = ""
    num_threads: int = Field(
        default=1, ge=1, description="torch CPU threads while RecBole trains and scores."
    )
    recbole: dict[str, Any] = Field(
        default_factory=dict, description="Further RecBole config keys (see RecBole's docs), passed as given."
    )

    @field_validator("recbole")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(value) & RESERVED_KEYS)
        if reserved:
            raise ValueError(f"recbole: {reserved} are set by the adapter (our split, seed, CPU)")
        known = set(model_defaults(cls.recbole_model)) if cls.recbole_model else set()
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"recbole: unknown RecBole keys {unknown} for {cls.recbole_model}; "
                f"known: {', '.join(sorted(known - RESERVED_KEYS))}"
            )
        return value

    def recbole_params(self) -> dict[str, Any]:
        """The RecBole config keys this config sets (typed fields that are not None)."""
        own = {
            k: v
            for k, v in self.model_dump().items()
            if k not in ("num_threads", "recbole") and v is not None
        }
        return {**own, **self.recbole}


class TrainedPeerConfig(PeerConfig):
    """Peers trained by gradient steps (epochs reported to the monitor)."""

    epochs: int | None = Field(
        default=None,
        ge=1,
        description="Maximum epochs (RecBole's default 300); early stopping picks the best.",
    )
    learning_rate: float | None = Field(default=None, gt=0, description="Adam step size (RecBole: 0.001).")
    train_batch_size: int | None = Field(default=None, ge=1, description="Batch size (RecBole: 2048).")


class RecBolePeer(Recommender):
    """Base of the peers: a RecBole model trained and scored through the adapter."""

    family = "peer"
    exportable = False
    Config = PeerConfig
    no_fold_in = "RecBole scores the user indices it was trained on: held-out users have none"

    def _run(self, data_pairs, n_users: int, n_items: int) -> RecBoleRun:
        return RecBoleRun(
            self.config.recbole_model,
            n_users,
            n_items,
            data_pairs,
            params=self.config.recbole_params(),
            seed=self.seed,
            num_threads=self.config.num_threads,
        )

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        run = self._run(pairs_from_matrix(data.matrix), data.n_users, data.n_items)
        try:
            self.run_ = run
            self._train(run, monitor)
        finally:
            run.close()  # the model stays in memory; RecBole's files are removed

    def _train(self, run: RecBoleRun, monitor: EpochMonitor | None) -> None:
        run.train_epoch(0)  # one pass (Pop counts; ItemKNN and EASE were computed at init)
        self.epochs_run_ = 1

    def _scorer(self) -> scoring.Computed:
        return scoring.Computed(function=self.run_.score)

    def _state(self):
        return {f"rb.{k}": v for k, v in self.run_.arrays().items()}

    def _set_state(self, state) -> None:
        run = self._run(pairs_from_matrix(self.seen_), self.index_.n_users, self.index_.n_items)
        try:
            run.load_arrays({k[3:]: v for k, v in state.items() if k.startswith("rb.")})
        finally:
            run.close()
        self.run_ = run


class TrainedPeer(RecBolePeer):
    """Peers trained epoch by epoch; each epoch is reported to the monitor."""

    iterative = True
    stochastic = True
    epoch_param = "epochs"
    Config = TrainedPeerConfig

    def _train(self, run: RecBoleRun, monitor: EpochMonitor | None) -> None:
        epochs = int(run.config["epochs"])
        best = None
        bar = tqdm(range(1, epochs + 1), desc=self.name, unit="epoch", leave=False, disable=None)
        for epoch in bar:
            loss = run.train_epoch(epoch - 1)
            bar.set_postfix(loss=f"{loss:.4f}")
            report = self._epoch_done(monitor, epoch, loss)
            if report.improved:
                best = run.state()
            if report.stop:
                break
        bar.close()
        if best is not None:
            run.load_state(best)
        self._training_done(best is not None)


# ----------------------------------------------------------------------------- the peers


class PopPeerConfig(PeerConfig):
    recbole_model: ClassVar[str] = "Pop"


class RecBolePop(RecBolePeer):
    """RecBole's Pop. Its counts depend on batching and sampled negatives (see the README), so
    it is seeded like a stochastic model."""

    name = "recbole_pop"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    stochastic = True
    Config = PopPeerConfig


class ItemKNNPeerConfig(PeerConfig):
    recbole_model: ClassVar[str] = "ItemKNN"
    k: int | None = Field(default=None, ge=1, description="Neighbourhood size (RecBole: 100).")
    shrink: float | None = Field(default=None, ge=0, description="Cosine shrinkage (RecBole: 0).")


class RecBoleItemKNN(RecBolePeer):
    """RecBole's ItemKNN (cosine item-item neighbourhood)."""

    name = "recbole_itemknn"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = ItemKNNPeerConfig


class EASEPeerConfig(PeerConfig):
    recbole_model: ClassVar[str] = "EASE"
    reg_weight: float | None = Field(default=None, gt=0, description="L2 weight lambda (RecBole: 250).")


class RecBoleEASE(RecBolePeer):
    """RecBole's EASE (closed-form linear item-item autoencoder)."""

    name = "recbole_ease"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = EASEPeerConfig


class BPRPeerConfig(TrainedPeerConfig):
    recbole_model: ClassVar[str] = "BPR"
    embedding_size: int | None = Field(default=None, ge=1, description="Latent dimensions (RecBole: 64).")


class RecBoleBPR(TrainedPeer):
    """RecBole's BPR-MF."""

    name = "recbole_bpr"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user embeddings")
    Config = BPRPeerConfig


class NeuMFPeerConfig(TrainedPeerConfig):
    recbole_model: ClassVar[str] = "NeuMF"
    mf_embedding_size: int | None = Field(default=None, ge=1, description="GMF embedding size (RecBole: 64).")
    mlp_embedding_size: int | None = Field(
        default=None, ge=1, description="MLP embedding size (RecBole: 64)."
    )
    mlp_hidden_size: list[int] | None = Field(
        default=None, description="MLP hidden sizes (RecBole: [128, 64])."
    )
    dropout_prob: float | None = Field(default=None, ge=0, lt=1, description="MLP dropout (RecBole: 0.1).")


class RecBoleNeuMF(TrainedPeer):
    """RecBole's NeuMF (scored with ``predict`` over every item, as RecBole's trainer does)."""

    name = "recbole_neumf"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user embeddings")
    Config = NeuMFPeerConfig


class LightGCNPeerConfig(TrainedPeerConfig):
    recbole_model: ClassVar[str] = "LightGCN"
    embedding_size: int | None = Field(default=None, ge=1, description="Latent dimensions (RecBole: 64).")
    n_layers: int | None = Field(default=None, ge=1, description="Propagation layers (RecBole: 2).")
    reg_weight: float | None = Field(default=None, ge=0, description="L2 weight (RecBole: 1e-5).")


class RecBoleLightGCN(TrainedPeer):
    """RecBole's LightGCN."""

    name = "recbole_lightgcn"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user embeddings")
    Config = LightGCNPeerConfig


class MultiVAEPeerConfig(TrainedPeerConfig):
    recbole_model: ClassVar[str] = "MultiVAE"
    latent_dimension: int | None = Field(default=None, ge=1, description="Latent size (RecBole: 128).")
    mlp_hidden_size: list[int] | None = Field(
        default=None, description="Encoder hidden sizes (RecBole: [600])."
    )
    dropout_prob: float | None = Field(default=None, ge=0, lt=1, description="Input dropout (RecBole: 0.5).")
    anneal_cap: float | None = Field(default=None, ge=0, description="Maximum KL weight (RecBole: 0.2).")
    total_anneal_steps: int | None = Field(
        default=None, ge=1, description="Steps to reach the KL cap (RecBole: 200000)."
    )


class RecBoleMultiVAE(TrainedPeer):
    """RecBole's MultiVAE (batches of users, as RecBole's autoencoder loader gives)."""

    name = "recbole_multivae"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    Config = MultiVAEPeerConfig


PEERS: dict[str, type[RecBolePeer]] = {
    cls.name: cls
    for cls in (
        RecBolePop,
        RecBoleItemKNN,
        RecBoleEASE,
        RecBoleBPR,
        RecBoleNeuMF,
        RecBoleLightGCN,
        RecBoleMultiVAE,
    )
}
