"""DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016) on Opacus: Poisson
sampling, per-sample clipping, Gaussian noise, and the accountant, shared by the DP-SGD models.

(One module: the sampling plan, the Opacus wrapper, the accountant's calibration and the
epoch loop the DP-SGD models share must agree on q, T and the noise multiplier; the models
themselves are :mod:`.dp_multvae` and :mod:`.dp_neumf`.)

One *unit* is one training sample of the model (``user``: one user's row; ``event``: one
interaction); n units in the data, at most N = ``max_units`` (public). Every optimiser step t:

- Poisson sampling: each of the n units joins the batch B_t independently with probability
  q = min(1, batch_size / N) (the expected batch is at most q N = batch_size); an empty batch is a
  step too (noise only) and is counted by the accountant like any other;
- per-sample clipping: g_i = grad of the sample's loss l_i over all trainable parameters at
  once, scaled to g_i min(1, C / ||g_i||_2) (C = ``clip``; Opacus divides by ||g_i|| + 1e-6);
- noise: g~ = (sum_{i in B_t} clip(g_i) + N(0, (z C)^2 I)) / (q N), z the noise multiplier;
- the wrapped optimiser (Adam) steps on g~ (post-processing: no further privacy cost).

Steps per epoch: T_e = max(1, round(1 / q)); the planned steps are T = epochs T_e. The noise
multiplier z is the one Opacus' ``get_noise_multiplier`` finds (bisection) for the accountant
(``prv``: the privacy-loss-random-variable accountant of Gopi et al. 2021, reporting its upper
bound; ``rdp``: Renyi DP of the subsampled Gaussian, Mironov et al. 2019) so that T steps of the
Poisson-subsampled Gaussian mechanism at rate q spend the target epsilon at delta (within
0.01 below it). Training that stops early (the validation monitor) spends less, and the
accountant says how much after each epoch. A refit with ``epochs`` set to the best epoch plans
its own T and is calibrated again, so it too spends the target.

Per-sample gradient norms: ``ghost`` (Opacus' ghost clipping, Li et al. 2022 / Bu et al. 2023:
each layer's per-sample gradient norm from its activations and output gradients without forming
the per-sample gradients, then a second backward pass of the clip-weighted loss) or ``hooks``
(per-sample gradients formed layer by layer, B x the parameters' size in memory, then clipped).
Both compute the same clipped sum up to floating-point error.

Public quantities: q, T_e and the expected batch come from the configuration's public bound N on
the number of units (``max_units``), not from the private count n (which only says how many units
Poisson sampling visits): q = min(1, batch_size / N), T_e = max(1, round(1 / q)), delta by default
min(1e-6, 1 / N^2) (:func:`~.mechanisms.resolve_delta`).

Randomness (:mod:`.noise`): the Poisson batches are drawn from a secret ChaCha20 stream and the
noise on the network's device from a torch generator re-seeded with fresh OS entropy before every
step, with Opacus' secure-mode sampling (the sum of four draws, halved); neither depends on the
model's seed or is recorded. Initial weights, negatives and the VAE's own sampling stay seeded.

What is released: the weights and what is computed from them. The training loss of a private
model is computed on private batches without noise, so it is neither reported nor logged.

Devices: the model's ``device`` (:mod:`personalize.models.neural.training`); Opacus runs on the
device of the network and draws its noise there.

Not covered: choices made by looking at validation data (the best epoch) use data outside the
private training set, which the guarantee does not cover (``DPSpec.not_covered``).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import numpy as np
import torch
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleHooks, GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from pydantic import Field
from torch import nn

from personalize.core.errors import ConfigError
from personalize.models.privacy.mechanisms import NOT_COVERED, DPConfig, DPSpec, PrivateModel, resolve_delta
from personalize.models.privacy.noise import fit_noise

MECHANISM = "dp_sgd"
#: bisection tolerance of the calibration: the planned steps spend epsilon in (target - this, target]
EPSILON_TOLERANCE = 0.01
#: attributes Opacus sets on parameters (removed when training ends)
_PARAM_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_norm_sample", "_current_grad_sample")

Accountant = Literal["prv", "rdp"]
GradSampleMode = Literal["ghost", "hooks"]


class DPSGDConfig(DPConfig):
    """The privacy settings of a DP-SGD model (mixed into the model's own config)."""

    clip: float | None = Field(
        default=1.0,
        gt=0,
        description="L2 bound on each sample's gradient (all parameters); null: no clipping (only "
        "without epsilon). Set without epsilon: clipping without noise.",
    )
    accountant: Accountant = Field(
        default="prv", description="Privacy accountant: prv (PRV, tighter) or rdp (Renyi DP)."
    )
    grad_sample_mode: GradSampleMode = Field(
        default="ghost",
        description="Per-sample gradient norms: ghost (ghost clipping, no per-sample gradients "
        "stored) or hooks (per-sample gradients formed).",
    )


def sampling_plan(batch_size: int, max_units: int) -> tuple[float, int]:
    """(q, T_e): the Poisson rate q = min(1, batch_size / N) and steps per epoch max(1, round(1 / q))
    for the public bound N = ``max_units`` on the number of units."""
    if max_units < 1:
        raise ValueError("DP-SGD needs at least one training unit")
    q = min(1.0, batch_size / max_units)
    return q, max(1, round(1.0 / q))


def make_accountant(name: str) -> PRVAccountant | RDPAccountant:
    if name == "prv":
        return PRVAccountant()
    if name == "rdp":
        return RDPAccountant()
    raise ConfigError(f"accountant: expected 'prv' or 'rdp', got {name!r}")


def epsilon_spent(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """epsilon at ``delta`` after ``steps`` Poisson-subsampled Gaussian steps (rate ``sample_rate``,
    noise multiplier ``noise_multiplier``), by ``accountant``; 0 for no steps."""
    if steps <= 0:
        return 0.0
    acc = make_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RDP: "optimal order is the largest alpha"
        return float(acc.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=256)
def calibrate_noise(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier z for which ``steps`` steps at ``sample_rate`` spend ``epsilon`` at
    ``delta`` by ``accountant`` (Opacus' bisection: the spent epsilon is in (epsilon - 0.01, epsilon]).
    Cached: a pure function of its arguments (seeds of one configuration share it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=EPSILON_TOLERANCE,
                )
            )
        except ValueError as exc:
            raise ConfigError(
                f"epsilon: {epsilon} at delta {delta} cannot be reached in {steps} steps at sampling rate "
                f"{sample_rate:.4g} ({exc})"
            ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's note that full backward hooks fire without input gradients (index inputs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


class PrivateSGD:
    """DP-SGD around ``net`` and its ``optimizer`` for ``n_units`` units (see the module doc).

    The sampling plan derives from ``config.max_units`` (the public bound N; without epsilon, where
    no guarantee is stated, N defaults to ``n_units``). ``clip`` None: plain steps (gradient of
    sum_i l_i / (q N)); ``noise_multiplier`` 0: clipping without noise. Use: ``batches()`` per
    epoch, ``step(losses)`` per batch, ``epoch_done()`` after an epoch, ``spec()`` for the
    guarantee, ``close()`` to detach Opacus' hooks.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        config: DPSGDConfig,
        batch_size: int,
        epochs: int,
        n_units: int,
        unit: str,
    ):
        self.unit = unit
        self.n_units = int(n_units)
        self.epsilon = config.epsilon
        self.clip = config.clip
        self.accountant_name = config.accountant
        self.mode = config.grad_sample_mode
        self.delta = resolve_delta(config.epsilon, config.delta, config.max_units, unit, self.n_units)
        self.max_units = int(config.max_units or self.n_units)
        self.sample_rate, self.steps_per_epoch = sampling_plan(batch_size, self.max_units)
        self.expected_batch_size = max(1, round(self.sample_rate * self.max_units))
        self.planned_steps = epochs * self.steps_per_epoch
        self.noise = fit_noise()
        self._sampling = self.noise.numpy(3)
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        self._step_noise = self.noise.steps(device)
        self.noise_multiplier = (
            0.0
            if config.epsilon is None
            else calibrate_noise(
                config.epsilon, self.delta, self.sample_rate, self.planned_steps, self.accountant_name
            )
        )
        self.steps = 0
        self.empty_steps = 0
        self.accountant = make_accountant(self.accountant_name)
        self.epsilon_history: list[float] = []
        self._net = net
        self._hooks = None
        self.optimizer: torch.optim.Optimizer = optimizer
        if self.clip is not None:
            kwargs = dict(
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.clip,
                expected_batch_size=self.expected_batch_size,
                loss_reduction="mean",
                generator=self._step_noise.generator,
                secure_mode=True,
            )
            if self.mode == "ghost":
                self._hooks = GradSampleHooksFastGradientClipping(
                    net, loss_reduction="mean", max_grad_norm=self.clip, use_ghost_clipping=True
                )
                self.optimizer = DPOptimizerFastGradientClipping(optimizer, **kwargs)
            else:
                self._hooks = GradSampleHooks(net, loss_reduction="mean")
                self.optimizer = DPOptimizer(optimizer, **kwargs)

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """The positions (0..n-1, sorted) of each of the epoch's T_e Poisson batches (may be
        empty): each unit joins with probability q, drawn from the fit's secret stream when the
        training is private, else from ``rng`` (the epoch's seeded generator)."""
        draw = self._sampling if self.private else rng
        for _ in range(self.steps_per_epoch):
            yield np.flatnonzero(draw.random(self.n_units) < self.sample_rate)

    def step(self, losses: Callable[[], torch.Tensor] | None) -> float | None:
        """One optimiser step. ``losses()`` returns the per-sample losses of the batch (shape (b,),
        b >= 1); None: an empty batch (noise only). Returns the batch's mean loss (None if empty)."""
        params = [p for p in self._net.parameters() if p.requires_grad]
        if self.private:
            self._step_noise.reseed()
        self.optimizer.zero_grad(set_to_none=True)
        value = None
        with _quiet():
            if losses is None:
                self.empty_steps += 1
                if self._hooks is None:
                    self.steps += 1
                    return None  # no clipping, no noise: nothing to add
                for p in params:  # a zero clipped sum, then Opacus' own noise, scaling and step
                    if self.mode == "ghost":
                        p.grad = torch.zeros_like(p)
                    else:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            else:
                per_sample = losses()
                value = float(per_sample.detach().mean())
                if self._hooks is None:
                    (per_sample.sum() / self.expected_batch_size).backward()
                elif self.mode == "ghost":
                    DPTensorFastGradientClipping(self._hooks, self.optimizer, per_sample, "mean").backward()
                else:
                    per_sample.mean().backward()
            self.optimizer.step()
        self.steps += 1
        if self.private:
            self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        return value

    def epoch_done(self) -> None:
        """Record the epsilon spent so far (private training only)."""
        if self.private:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self.epsilon_history.append(float(self.accountant.get_epsilon(delta=self.delta)))

    def spec(self) -> DPSpec:
        """The guarantee of the training run so far (``epsilon``: the calibration target;
        ``epsilon_spent``: the accountant's epsilon for the steps taken)."""
        private = self.private
        clip = self.clip
        return DPSpec(
            unit=self.unit,
            epsilon=self.epsilon,
            delta=self.delta,
            clip=clip,
            sigma=self.noise_multiplier * clip if private and clip is not None else 0.0,
            mechanism=MECHANISM if private else "none",
            noise_multiplier=self.noise_multiplier if private else None,
            sample_rate=self.sample_rate,
            steps=self.steps,
            accountant=self.accountant_name if private else None,
            epsilon_spent=(self.epsilon_history[-1] if self.epsilon_history else 0.0) if private else None,
            noise=self.noise.kind,
            max_units=self.max_units if private else None,
            not_covered=NOT_COVERED[self.unit] if private else "",
        )

    def close(self) -> None:
        """Detach Opacus from the network (hooks and per-parameter attributes)."""
        if self._hooks is not None:
            self._hooks.cleanup()
            for attr in ("autograd_grad_sample_hooks",):
                if hasattr(self._net, attr):
                    delattr(self._net, attr)
            for module in self._net.modules():
                for attr in ("activations", "max_batch_len"):
                    if attr in module.__dict__:
                        delattr(module, attr)
            self._hooks = None
        for p in self._net.parameters():
            for attr in _PARAM_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)


class DPSGDModel(PrivateModel):
    """What every DP-SGD model adds to its non-private torch model (mixed in first, e.g.
    ``class DPMultVAE(DPSGDModel, MultVAE)``): the :class:`PrivateSGD` around its network, the
    epoch loop over Poisson batches, ``epsilon_history_`` (epsilon spent after each epoch), the
    guarantee ``dp_`` (saved in ``model.json``: :class:`~.mechanisms.PrivateModel`), and, when
    private, a cold-user fallback computed from the private weights (:meth:`_private_fallback`)
    instead of the training item counts.

    The model implements ``_batch_loss(positions, rng_state)`` -> a closure returning the batch's
    per-sample losses (``positions``: indices of the sampled units) and ``_private_fallback``."""

    dp_unit: ClassVar[str]
    config: DPSGDConfig
    net_: nn.Module

    def _fit(self, data, monitor) -> None:
        self.epsilon_history_: list[float] = []
        super()._fit(data, monitor)  # type: ignore[misc]

    def _start_private(self, optimizer: torch.optim.Optimizer, n_units: int) -> None:
        c = self.config
        self._private = PrivateSGD(
            self.net_,
            optimizer,
            config=c,
            batch_size=c.batch_size,  # type: ignore[attr-defined]
            epochs=c.epochs,  # type: ignore[attr-defined]
            n_units=n_units,
            unit=self.dp_unit,
        )

    def _batch_loss(self, positions: np.ndarray) -> Callable[[], torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _private_epoch(self, rng: np.random.Generator) -> float | None:
        """One epoch of DP-SGD steps (an empty batch is a step too); the mean batch loss, or None
        for a private model (the loss of private batches carries no noise: not released)."""
        private = self._private
        losses = []
        for positions in private.batches(rng):
            loss = private.step(None if len(positions) == 0 else self._batch_loss(positions))
            self._stepped()
            if loss is not None:
                losses.append(loss)
        private.epoch_done()
        self.epsilon_history_ = list(private.epsilon_history)
        if private.private:
            return None
        return float(np.mean(losses)) if losses else float("nan")

    def _stepped(self) -> None:
        """Called after every optimiser step (e.g. to advance an annealing schedule)."""

    def _private_fallback(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _finish(self, data) -> None:
        self._private.close()
        self.dp_ = self._private.spec()
        if self.config.epsilon is not None:
            self.popularity_ = self._private_fallback()
        del self._private
        super()._finish(data)  # type: ignore[misc]

    def _state(self):
        return {
            **super()._state(),  # type: ignore[misc]
            "dp.epsilon_history": np.asarray(self.epsilon_history_, dtype=np.float64),
        }

    def _set_state(self, state) -> None:
        super()._set_state({k: v for k, v in state.items() if not k.startswith("dp.")})  # type: ignore[misc]
        self.epsilon_history_ = [float(e) for e in state["dp.epsilon_history"]]
