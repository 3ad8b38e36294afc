"""Where a private model's randomness comes from: secret, drawn when the model is fitted, never
derived from its seed and never recorded.

A differential-privacy guarantee holds only while the noise is unknown to whoever reads the
release. Noise drawn from a generator seeded by a logged integer can be regenerated and subtracted
(the exact clipped counts come back), and Poisson batches drawn from a logged seed can be replayed,
which voids the subsampling amplification the accountant counts. So every noise sample **and every
sampling decision a guarantee rests on** (Poisson batch membership in DP-SGD, the random m-subset
of a user's items in the Laplace counts) is drawn here, from fresh operating-system entropy
(:mod:`secrets`) at fit time; everything else in training (initial weights, negatives, dropout,
the validation monitor) stays seeded and reproducible.

- NumPy arrays (the noisy Gram matrix of DP-EASE and DP-ItemKNN, private ALS's statistics, the
  Poisson batches): ChaCha20 (``randomgen.ChaCha``, 20 rounds), a stream cipher's keystream, keyed
  with 256 fresh bits; each call of :meth:`Noise.numpy` takes a new key. Without the key its output
  is computationally indistinguishable from uniform, and no key is kept after the fit.
- DP-SGD's per-step Gaussian noise is drawn by Opacus on the network's device. Its ``secure_mode``
  wants torchcsprng, which has no build for torch 2.13; instead the step's ``torch.Generator`` is
  re-seeded with 64 fresh bits of OS entropy before every optimiser step (:class:`StepNoise`) and
  Opacus' secure-mode sampling is on (see below). An attacker who knows the code and every logged
  value must guess 64 unknown bits per step; the generator's raw outputs, which a state-recovery
  attack on Mersenne Twister would need, are never released (only their sum with the clipped
  gradients, transformed by Adam).
- Gaussian noise on arrays is hardened against floating-point attacks (Holohan & Braghin 2021;
  Opacus' ``secure_mode``): each entry is the sum of four N(0, sigma^2) draws, halved (the same
  N(0, sigma^2)), so the output's low-order bits no longer identify the uniform draw behind it.
- Noisy counts (DP popularity, private ALS's fallback counts, an export's ``private_fallback``) go
  through OpenDP's samplers (:mod:`.aggregates`), exact discrete samplers over OpenDP's CSPRNG,
  which resist the floating-point attacks on textbook Laplace and Gaussian sampling (Mironov 2012).

**The test switch.** :func:`reproducible_noise` (or the environment variable
:data:`TEST_SEED_VARIABLE`, so that it reaches processes a test starts) makes the same draws come
from a generator seeded by a test seed, for tests that need two fits to agree. A model fitted
under it is **not private**: its guarantee says ``noise: reproducible`` (logged as
``privacy.dp_noise``), its exported state says so, and registering it as a model version is refused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: the environment variable of the test switch (an integer seed); unset in normal use
TEST_SEED_VARIABLE = "PERSONALIZE_DP_TEST_NOISE_SEED"
SECRET = "secret"
REPRODUCIBLE = "reproducible"
#: why a model fitted under the test switch is not private (in its exported state and refusals)
NOT_PRIVATE_NOTE = (
    "fitted with reproducible noise (the test switch): its noise can be regenerated, so it is not private"
)


def _chacha(key: int) -> np.random.Generator:
    from randomgen import ChaCha

    return np.random.Generator(ChaCha(key=key, rounds=20))


@dataclass(frozen=True)
class Noise:
    """The randomness of one private fit: secret (``test_seed`` None) or the test switch's."""

    test_seed: int | None = None

    @property
    def secret(self) -> bool:
        return self.test_seed is None

    @property
    def kind(self) -> str:
        """``secret`` or ``reproducible`` (the value of a guarantee's ``noise`` field)."""
        return SECRET if self.secret else REPRODUCIBLE

    def numpy(self, stream: int) -> np.random.Generator:
        """A generator for one use (``stream`` numbers the uses within a fit): ChaCha20 under a
        fresh 256-bit key; under the test switch, ``default_rng([test_seed, stream])``."""
        if self.secret:
            return _chacha(secrets.randbits(256))
        return np.random.default_rng([self.test_seed, stream])

    def steps(self, device) -> StepNoise:
        """The torch generator DP-SGD draws its per-step noise from (:class:`StepNoise`)."""
        return StepNoise(self, device)


class StepNoise:
    """A ``torch.Generator`` on ``device`` re-seeded before every DP-SGD step: with 64 fresh bits
    of OS entropy, or under the test switch with (test seed, step number)."""

    def __init__(self, noise: Noise, device):
        import torch

        self.noise = noise
        self.generator = torch.Generator(device=device)
        self.step = 0

    def reseed(self) -> None:
        self.step += 1
        if self.noise.secret:
            self.generator.manual_seed(secrets.randbits(64))
        else:
            seq = np.random.SeedSequence([self.noise.test_seed, 7, self.step])
            self.generator.manual_seed(int(seq.generate_state(1, np.uint64)[0]))


def fit_noise() -> Noise:
    """The noise of a fit starting now: secret, unless the test switch is on."""
    value = os.environ.get(TEST_SEED_VARIABLE)
    if value is None or value == "":
        return Noise()
    try:
        return Noise(int(value))
    except ValueError:
        raise ValueError(f"{TEST_SEED_VARIABLE}: expected an integer seed, got {value!r}") from None


@contextlib.contextmanager
def reproducible_noise(seed: int = 0) -> Iterator[None]:
    """For tests only: private models fitted inside draw their noise from ``seed`` (and record
    that they are not private). Sets :data:`TEST_SEED_VARIABLE`, so processes started inside
    inherit it; restores the previous value on exit."""
    before = os.environ.get(TEST_SEED_VARIABLE)
    os.environ[TEST_SEED_VARIABLE] = str(int(seed))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TEST_SEED_VARIABLE, None)
        else:
            os.environ[TEST_SEED_VARIABLE] = before


def gaussian(rng: np.random.Generator, sigma: float, size) -> np.ndarray:
    """N(0, sigma^2) entries hardened against floating-point attacks: the sum of four draws,
    halved (Holohan & Braghin 2021, as Opacus' secure mode)."""
    out = rng.normal(0.0, sigma, size=size)
    for _ in range(3):
        out += rng.normal(0.0, sigma, size=size)
    return out * 0.5
