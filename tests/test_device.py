"""The ``device`` option (cpu | cuda | auto) of the torch models, the segment autoencoder and the
sentence encoder: cpu is today's behaviour bit for bit, auto falls back to the CPU, cuda without
a GPU is a clear ConfigError, and on a GPU the results match the CPU's within a tolerance."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from personalize.config.device import resolve_device_name
from personalize.config.segments import AutoencoderConfig
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.features import text
from personalize.models import create_model
from personalize.models.neural.training import dropout, resolve_device, standard_normal
from personalize.segments.autoencoder import fit_autoencoder

CUDA = torch.cuda.is_available()

SMALL = {
    "neumf": {"epochs": 2, "factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8], "dropout": 0.2},
    "multvae": {"epochs": 2, "hidden": 32, "latent": 8, "batch_size": 32, "total_anneal_steps": 4},
    "two_tower": {
        "epochs": 2,
        "id_dim": 8,
        "feature_dim": 4,
        "hidden": [16],
        "out_dim": 8,
        "negatives": 32,
        "batch_size": 256,
        "text_source": "tfidf",
        "tfidf_dim": 16,
        "backend": "torch",
    },
    "dp_neumf": {
        "epochs": 1,
        "factors": 8,
        "mlp_embedding": 8,
        "mlp_layers": [8],
        "epsilon": 5.0,
        "max_units": 100_000,
    },
    "dp_multvae": {
        "epochs": 1,
        "hidden": 16,
        "latent": 4,
        "batch_size": 20,
        "epsilon": 5.0,
        "max_units": 1000,
    },
}
MODELS = ["neumf", "multvae", "two_tower"]


@pytest.fixture(scope="module")
def train(ml100k_small_train) -> InteractionData:
    return ml100k_small_train


def fitted(kind: str, train: InteractionData, **extra):
    return create_model(kind, {**SMALL[kind], **extra}, seed=7).fit(train)


def exported(model) -> dict[str, np.ndarray]:
    """Everything a fitted model hands on: its scores of every indexed user and its saved arrays."""
    state = {k: v for k, v in model._state().items() if isinstance(v, np.ndarray)}
    return {"scores": model.score(np.arange(model.index_.n_users)), **state}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------------------ cpu


@pytest.mark.parametrize("kind", MODELS)
def test_device_cpu_gives_exactly_the_results_of_a_fit_without_the_option(kind, train):
    default = fitted(kind, train)
    on_cpu = fitted(kind, train, device="cpu")
    assert default.config.device == "cpu"
    assert default.fit_device_ == on_cpu.fit_device_ == "cpu"
    assert_same(exported(default), exported(on_cpu))
    assert all(p.device.type == "cpu" for p in on_cpu.net_.parameters())


def test_device_is_saved_with_the_config_and_a_loaded_model_scores_on_the_cpu(train, tmp_path):
    model = fitted("neumf", train, device="auto")
    loaded = type(model).load(model.save(tmp_path / "m"))
    assert loaded.config.device == "auto"
    users = np.arange(model.index_.n_users)
    assert np.array_equal(loaded.score(users), model.score(users))


# ----------------------------------------------------------------------------------------- auto


@pytest.mark.parametrize("kind", MODELS)
def test_auto_without_cuda_resolves_to_cpu_and_gives_the_same_results(kind, train, no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    auto = fitted(kind, train, device="auto")
    assert auto.fit_device_ == "cpu"
    assert_same(exported(auto), exported(fitted(kind, train, device="cpu")))


def test_auto_picks_cuda_when_torch_finds_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device_name("auto", "x") == "cuda"


# ------------------------------------------------------------------------ cuda without a GPU


@pytest.mark.parametrize("kind", [*MODELS, "dp_neumf", "dp_multvae"])
def test_cuda_without_a_gpu_is_a_config_error_naming_the_model(kind, train, no_cuda):
    model = create_model(kind, {**SMALL[kind], "device": "cuda"}, seed=7)  # accepted until fit time
    with pytest.raises(ConfigError) as err:
        model.fit(train)
    message = str(err.value)
    assert message.startswith(f"{kind}: device 'cuda' was requested but no CUDA device was found")
    assert f"torch {torch.__version__}" in message  # what torch found
    assert "'cpu'" in message and "'auto'" in message  # what to do instead
    assert not hasattr(model, "net_")


def test_cuda_without_a_gpu_fails_for_the_autoencoder_and_the_sentence_encoder(no_cuda):
    vectors = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"^segments autoencoder: device 'cuda' was requested"):
        fit_autoencoder(vectors, AutoencoderConfig(device="cuda", epochs=1, hidden=4, latent=2))
    with pytest.raises(ConfigError, match=r"^sentence embeddings: device 'cuda' was requested"):
        text.embed_texts(["a film"], cache=False, device="cuda")


def test_an_unknown_device_is_rejected_by_the_config():
    with pytest.raises(
        ConfigError, match=r"(?s)model 'neumf': invalid parameters.*device.*'auto', 'cpu' or 'cuda'"
    ):
        create_model("neumf", {"device": "gpu"})
    with pytest.raises(pydantic.ValidationError, match="device"):
        AutoencoderConfig(device="gpu")
    with pytest.raises(ConfigError, match=r"^x: device must be one of auto, cpu, cuda, got 'gpu'"):
        resolve_device_name("gpu", "x")


def test_the_torchrec_backend_stays_on_the_cpu(monkeypatch):
    with pytest.raises(ConfigError, match="torchrec' runs on the CPU only"):
        create_model("two_tower", {"device": "cuda", "backend": "torchrec"})
    model = create_model("two_tower", {"device": "auto", "backend": "torchrec"})
    model.device_ = torch.device("cuda", 0)  # what auto resolves to on a GPU machine
    with pytest.raises(ConfigError, match=r"^two_tower: backend 'torchrec' runs on the CPU only"):
        model._fit_backend()
    model = create_model("two_tower", {"device": "auto", "backend": "auto"})
    model.device_ = torch.device("cuda", 0)
    assert model._fit_backend() == "torch"
    model.device_ = torch.device("cpu")
    assert model._fit_backend() == "auto"


def test_autoencoder_on_cpu_is_unchanged_by_the_option():
    rng = np.random.default_rng(0)
    vectors = (rng.random((40, 30)) < 0.2).astype(np.float32)
    base = AutoencoderConfig(epochs=2, hidden=8, latent=2)
    a = fit_autoencoder(vectors, base, seed=1)
    b = fit_autoencoder(vectors, base.model_copy(update={"device": "cpu"}), seed=1)
    assert np.array_equal(a.latent, b.latent) and a.losses == b.losses


def test_random_draws_on_the_cpu_are_torchs_own():
    x = torch.rand(50, 30)
    torch.manual_seed(5)
    expected = torch.nn.functional.dropout(x, 0.3, training=True), torch.randn_like(x)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.3, training=True), expected[0])
    assert torch.equal(standard_normal(x), expected[1])
    assert torch.equal(dropout(x, 0.3, training=False), x)


# --------------------------------------------------------------------- the sentence encoder


class FakeEncoder:
    """Stands in for the sentence encoder: records the device it was loaded on."""

    def __init__(self, loads: list[str], device: str):
        loads.append(device)

    def encode(self, texts, **_):
        return np.array([[len(t), 1.0] + [0.0] * (text.EMBEDDING_DIM - 2) for t in texts], dtype=np.float32)


@pytest.fixture
def fake_encoder(monkeypatch, tmp_path) -> list[str]:
    loads: list[str] = []
    monkeypatch.setattr(text, "load_encoder", lambda device="cpu": FakeEncoder(loads, device))
    monkeypatch.setattr(text, "cache_dir", lambda: tmp_path / "cache")
    return loads


def test_the_embedding_cache_does_not_depend_on_the_device(fake_encoder, no_cuda):
    first = text.embed_texts(["Heat (1995)", "Up (2009)"], device="cpu")
    again = text.embed_texts(["Heat (1995)", "Up (2009)"], device="auto")
    assert fake_encoder == ["cpu"]  # the second call read the cache
    assert np.array_equal(first, again)
    text.embed_texts(["Heat (1995)"], cache=False, device="auto")
    assert fake_encoder == ["cpu", "cpu"]  # auto without CUDA loads the encoder on the CPU


def test_the_models_pass_their_device_to_the_sentence_encoder(fake_encoder, train, no_cuda):
    params = {**SMALL["two_tower"], "epochs": 1, "text_source": "sentence", "device": "auto"}
    create_model("two_tower", params, seed=1).fit(train)
    assert fake_encoder == ["cpu"]
    with pytest.raises(ConfigError, match=r"^sentence embeddings: device 'cuda' was requested"):
        create_model("content", {"vectors": "dense", "device": "cuda"}).fit(train)
    assert fake_encoder == ["cpu"]


# ---------------------------------------------------------------------------------- on a GPU


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("kind", MODELS)
def test_on_cuda_the_scores_match_the_cpu_within_tolerance(kind, train):
    on_cpu, on_gpu = fitted(kind, train, device="cpu"), fitted(kind, train, device="cuda")
    assert on_gpu.fit_device_ == "cuda"
    assert all(p.device.type == "cpu" for p in on_gpu.net_.parameters())  # handed back on the CPU
    a, b = exported(on_cpu), exported(on_gpu)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key].dtype == a[key].dtype
        np.testing.assert_allclose(b[key], a[key], rtol=1e-3, atol=1e-3, err_msg=key)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["dp_neumf", "dp_multvae"])
def test_dp_sgd_trains_on_cuda(kind, train):
    model = fitted(kind, train, device="cuda")
    assert model.fit_device_ == "cuda" and model.dp_.steps > 0
    assert np.isfinite(model.score(np.arange(model.index_.n_users))).all()
    again = fitted(kind, train, device="cuda")  # reproducible on the device
    np.testing.assert_allclose(exported(again)["scores"], exported(model)["scores"], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_on_cuda_the_autoencoder_and_the_sentence_encoder_match_the_cpu():
    rng = np.random.default_rng(0)
    vectors = (rng.random((60, 40)) < 0.2).astype(np.float32)
    config = AutoencoderConfig(epochs=2, hidden=8, latent=2)
    a = fit_autoencoder(vectors, config, seed=1)
    b = fit_autoencoder(vectors, config.model_copy(update={"device": "cuda"}), seed=1)
    np.testing.assert_allclose(b.latent, a.latent, rtol=1e-3, atol=1e-4)
    texts = ["Heat (1995). Genres: Action, Crime", "Up (2009). Genres: Animation"]
    cpu = text.embed_texts(texts, cache=False, device="cpu")
    gpu = text.embed_texts(texts, cache=False, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
