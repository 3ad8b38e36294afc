"""The two-tower model trained in several processes under TorchRec's ``DistributedModelParallel``.

``TwoTowerConfig.processes = N > 1``: the fit writes what the workers need (encoded features,
training pairs, config, seed, the initial weights) to a temporary work directory and launches::

    python -m torch.distributed.run --standalone --nproc_per_node=N \\
        -m personalize.models.hybrid.distributed WORKDIR

(the same command works by hand, with ``torchrun`` for ``python -m torch.distributed.run``, on a
work directory that :class:`DistributedFit` wrote). Every rank builds the same network, loads the
same initial weights, and wraps it in ``DistributedModelParallel`` with the sharding plan of
``sharding`` (:func:`sharding_plan`: every embedding table of both towers sharded the same way,
compute kernel ``dense``; the MLPs are replicated and their gradients averaged by
``DistributedDataParallel``).

Exactness: each rank draws every global batch exactly as the single-process loop does (same
``epoch_rng(seed, epoch)``, same order of draws: :meth:`TwoTower._batches`) and takes its
contiguous slice of the batch rows (rank r of W: rows ``[r m, (r + 1) m)``, ``m = ceil(b / W)``);
the ID-dropout masks and negatives are the global draws, sliced. Slices are padded to ``m`` rows
(and the candidates to ``ceil(candidates / W)``) with copies of row 0 whose outputs are discarded
(zero gradient), so that every collective sees equal sizes. Softmax with in-batch negatives needs
every candidate's item vector on every rank: each rank encodes its slice of the candidates and the
slices are all-gathered with autograd (``torch.distributed.nn.functional.all_gather``; its
backward sums the gradients of all ranks). Rank r's loss is ``W / b * sum of its rows' losses``:
the sum over ranks is W times the global batch mean, and the gradients are averaged over the W
ranks (DDP for replicated parameters; TorchRec divides the embedding gradients it returns through
its all-to-all by W), so every parameter receives the gradient of the global batch mean, and
Adam (elementwise, over each rank's shards) makes the single-process step.

Measured (``tests/test_distributed.py``): the gradients of a global batch equal the
single-process ones to 3e-6 - 9e-6 of each tensor's largest entry (float32 summation order); after
a few steps the weights agree to about 1e-6, except the few elements whose true gradient is
within float noise of zero, where Adam's first step lr * g / (|g| + eps) takes its sign from the
summation order (e.g. the bias of the item-bias output, whose gradient is exactly zero as a
softmax ignores a common shift: it drifts by up to lr per step and shifts every score by the same
constant). Over many epochs two runs drift apart as any two summation orders do (MovieLens-100K,
3 epochs: final training loss 6.3675 in 2 processes, 6.3666 in 1).

Epoch protocol: after each epoch rank 0 writes the full (unsharded) ``state_dict`` and the
epoch's mean loss to ``state_<epoch>.pt`` (written, then renamed), and all ranks wait for
``decision_<epoch>`` (``continue``) or ``stop`` from the parent, whose own epoch loop (validation
monitor, best epoch, early stopping, progress bar) runs unchanged on its copy of the network, into
which it loads each epoch's state. Failures: a worker that raises writes ``error_rank<r>.txt``;
when torchrun exits before the next state the fit raises :class:`DistributedTrainingError` with
the workers' errors and the tail of torchrun's output; the parent kills torchrun's process group
(SIGTERM, then SIGKILL) when the fit ends either way; workers exit by themselves when the fitting
process or their torchrun agent dies (a watchdog thread; rank 0 then removes the work directory
of a dead fitting process) or no decision comes within ``DECISION_TIMEOUT_S``.

Sharding types with 2 gloo processes on the CPU (TorchRec 1.8, fbgemm-gpu-cpu 1.8; checked by
:func:`probe_shardings`, ``tests/test_distributed.py``): "works" = the sharded collection's pooled
output equals the unsharded one's and a backward pass and an optimiser step run.

==============  =====================================  =====================================
sharding        kernel ``dense`` (torch's Adam)        kernel ``fused`` (fbgemm's optimiser)
==============  =====================================  =====================================
data_parallel   works                                  fails: AssertionError in TorchRec's
                                                       EmbeddingFusedOptimizer (no global
                                                       table metadata for replicated tables)
table_wise      works                                  works (exact_row_wise_adagrad)
column_wise     works                                  works (exact_row_wise_adagrad)
row_wise        works with equal per-rank batch        as dense
                sizes; unequal sizes fail in the
                backward: ``ProcessGroupGloo::
                allgather: invalid tensor size``
table_row_wise  as row_wise                            as row_wise
==============  =====================================  =====================================

Row-wise pooling sums the ranks' partial pools with a variable-size reduce-scatter, which gloo
runs; its backward is a variable-size all-gather, which gloo refuses. The slices here are padded
to equal sizes, so every type trains. The fused CPU kernels take only exact_sgd, exact_adagrad,
exact_row_wise_adagrad and ema_in_place_row_wise_adagrad (``adam``: "Optimizer adam is not
supported in CPU mode"), and update only the rows in the batch inside the backward pass, so they
cannot reproduce the single-process dense Adam: the training uses the ``dense`` kernel.

Speed on 2 CPU cores (``benchmarks/bench_distributed.py``; default two-tower, TF-IDF text, the
machine shared, load average about 2): 2 processes are slower than 1. Seconds per epoch,
MovieLens-100K: 1 process 1.20 (2 threads 1.24); 2 processes data_parallel 2.09, table_wise 2.70,
column_wise / row_wise / table_row_wise 3.1. Synthetic log of 1M interactions (10k users, 2k
items): 13.9 (2 threads 11.2); data_parallel 24.6, the sharded types 32.7-35.9. Each step runs
several collectives over loopback (the KeyedJaggedTensor and pooled-embedding all-to-alls of both
towers, the candidates' all-gather and its backward, DDP's all-reduce) while its arithmetic is
small, and each process repeats the per-step Python work. ``sharding`` therefore defaults to
data_parallel (the tables replicated, only gradients exchanged), the fastest measured; the sharded
types are for tables too large for one process, and the multi-process fit is for GPUs (one per
process, NCCL), where each rank's step is mostly arithmetic.

Devices: ``device: cpu`` uses gloo (``dist_backend: auto``); ``device: cuda`` (or ``auto`` on a
GPU machine) uses NCCL and one GPU per rank (``cuda:LOCAL_RANK``; the processes must not exceed
the visible GPUs, refused otherwise); the fitting process keeps its own copy (plain-PyTorch bags)
on its current CUDA device. Multi-node launches are not supported (``--standalone``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from personalize.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from personalize.data.matrix import InteractionData
    from personalize.models.hybrid.towers import TwoTowerNet

Sharding = Literal["table_wise", "column_wise", "row_wise", "table_row_wise", "data_parallel"]
SHARDINGS: tuple[str, ...] = typing.get_args(Sharding)
DistBackend = Literal["auto", "gloo", "nccl"]
COMPUTE_KERNELS = ("dense", "fused")

DECISION_TIMEOUT_S = 3600.0  # workers give up waiting for the parent's decision after this long
WATCHDOG_EXIT = 17  # exit status of a worker whose fitting process or torchrun agent died
_POLL_S = 0.02


class DistributedTrainingError(RuntimeError):
    """The distributed fit failed (a worker raised or died, or torchrun exited early)."""


def resolve_dist_backend(name: str, device_type: str) -> str:
    """The collective backend: ``auto`` = gloo on the CPU, nccl on CUDA; ``nccl`` needs CUDA."""
    if name == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if name == "nccl" and device_type != "cuda":
        raise ConfigError(
            f"two_tower: dist_backend 'nccl' needs a CUDA device, but the fit runs on {device_type}"
        )
    return name


# ------------------------------------------------------------------------------ sharding plan


def balanced_ranks(sizes: list[int], world_size: int) -> list[int]:
    """Table-wise placement: tables in decreasing size (ties by position) each go to the rank
    with the fewest parameters so far (ties: lowest rank). Returns the rank of each table."""
    load = [0] * world_size
    ranks = [0] * len(sizes)
    for j in sorted(range(len(sizes)), key=lambda k: (-sizes[k], k)):
        r = min(range(world_size), key=lambda q: (load[q], q))
        ranks[j] = r
        load[r] += sizes[j]
    return ranks


def collection_plan(
    collection: nn.Module, sharding: str, world_size: int, device_type: str, compute_kernel: str = "dense"
) -> Any:
    """TorchRec's module sharding plan of one ``EmbeddingBagCollection``: every table sharded by
    ``sharding`` (table_wise: :func:`balanced_ranks`; column_wise: columns split over all ranks;
    row_wise / table_row_wise: rows split over all ranks of the one host), with ``compute_kernel``."""
    from torchrec.distributed.sharding_plan import (
        column_wise,
        construct_module_sharding_plan,
        data_parallel,
        row_wise,
        table_row_wise,
        table_wise,
    )

    if sharding not in SHARDINGS:
        raise ConfigError(f"two_tower: sharding {sharding!r} is not one of {', '.join(SHARDINGS)}")
    if compute_kernel not in COMPUTE_KERNELS:
        raise ConfigError(f"two_tower: compute kernel {compute_kernel!r} is not one of {COMPUTE_KERNELS}")
    configs = collection.embedding_bag_configs()
    if sharding == "table_wise":
        ranks = balanced_ranks([t.num_embeddings * t.embedding_dim for t in configs], world_size)
        per = {t.name: table_wise(rank=r, compute_kernel=compute_kernel) for t, r in zip(configs, ranks)}
    elif sharding == "column_wise":
        per = {
            t.name: column_wise(ranks=list(range(world_size)), compute_kernel=compute_kernel) for t in configs
        }
    elif sharding == "row_wise":
        per = {t.name: row_wise(compute_kernel=compute_kernel) for t in configs}
    elif sharding == "table_row_wise":
        per = {t.name: table_row_wise(host_index=0) for t in configs}
    else:
        per = {t.name: data_parallel() for t in configs}
    plan = construct_module_sharding_plan(
        collection, per, world_size=world_size, local_size=world_size, device_type=device_type
    )
    for parameter_sharding in plan.values():  # the helpers without a kernel argument
        parameter_sharding.compute_kernel = compute_kernel
    return plan


def sharding_plan(
    net: TwoTowerNet, sharding: str, world_size: int, device_type: str, prefix: str = ""
) -> Any:
    """The ``ShardingPlan`` of both towers' collections (module paths ``<prefix>user.bags`` and
    ``<prefix>item.bags``), compute kernel ``dense``."""
    from torchrec.distributed.types import ShardingPlan

    return ShardingPlan(
        {
            f"{prefix}{side}.bags": collection_plan(
                getattr(net, side).bags, sharding, world_size, device_type
            )
            for side in ("user", "item")
        }
    )


# ------------------------------------------------------------------------------ worker side


def rank_rows(n: int, rank: int, world_size: int) -> tuple[np.ndarray, int]:
    """Rank ``rank``'s contiguous slice of ``n`` rows, padded with row 0 to ``ceil(n / W)``
    entries, and the number of real rows (a prefix of the slice; 0 when ``n`` is short)."""
    m = -(-n // world_size)
    rows = np.arange(rank * m, (rank + 1) * m, dtype=np.int64)
    real = int(min(max(n - rank * m, 0), m))
    rows[real:] = 0
    return rows, real


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The ranks' equal-shaped ``x`` stacked along rows in rank order, with autograd (the backward
    sums every rank's gradient of its own slice)."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def rank_loss(model: Any, net: TwoTowerNet, batch: Any, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of a global batch's loss, scaled so that the gradient averaged over
    the ranks is the gradient of the global batch mean: ``W / b * sum of the slice's row losses``
    (see the module doc)."""
    b = len(batch.users)
    rows, real = rank_rows(b, rank, world_size)
    users = model._tower(
        net.user,
        model.user_features_,
        batch.users[rows],
        batch.user_drop[rows],
        {k: v[rows] for k, v in batch.context.items()},
    )[:real]
    own = rows[:real]
    scale = world_size / b
    if model.config.loss == "bpr":  # the slice's own positives and negatives: no exchange needed
        both = np.concatenate([rows, b + rows])
        items = model._tower(
            net.item, model.item_features_, batch.candidates[both], batch.candidate_drop[both]
        )
        m = len(rows)
        pos = net.pair_scores(users, items[:real])
        neg = net.pair_scores(users, items[m : m + real])
        return F.softplus(-(pos - neg)).sum() * scale
    n_cand = len(batch.candidates)
    crows, _ = rank_rows(n_cand, rank, world_size)
    local = model._tower(net.item, model.item_features_, batch.candidates[crows], batch.candidate_drop[crows])
    items = all_gather_rows(local)[:n_cand]
    logits = net.scores(users, items)
    if batch.log_q is not None:
        logits = logits - model._tensor(batch.log_q)[None, :]
    hit = model._tensor(batch.candidates[None, :] == batch.items[own][:, None])
    target = model._tensor(own)
    hit[torch.arange(real, device=hit.device), target] = False
    logits = logits.masked_fill(hit, float("-inf"))
    return F.cross_entropy(logits, target, reduction="sum") * scale


class RankStep(nn.Module):
    """What ``DistributedModelParallel`` wraps: the network, and as forward the rank's loss."""

    def __init__(self, model: Any, net: TwoTowerNet, rank: int, world_size: int):
        super().__init__()
        self.net = net
        self._model = model
        self.rank = rank
        self.world_size = world_size

    def forward(self, batch: Any) -> torch.Tensor:
        return rank_loss(self._model, self.net, batch, self.rank, self.world_size)


def full_state(
    module: nn.Module, rank: int, prefix: str = "", device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The unsharded ``state_dict`` of a (DMP-wrapped) module on rank 0 (CPU tensors, keys
    without ``prefix``; sharded tensors gathered on ``device``, the ranks' device, CPU by
    default); collective: every rank must call it; other ranks get ``{}``."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype, device=device) if rank == 0 else None
            value.gather(dst=0, out=full)
        elif isinstance(value, DTensor):
            full = value.full_tensor()
        else:
            full = value
        if rank == 0:
            out[key.removeprefix(prefix)] = full.detach().cpu().clone()
    return out


@torch.no_grad()
def load_full_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Copy the unsharded ``state`` (keys without ``prefix``) into a DMP-wrapped module's local
    shards and replicas, in place."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    for key, value in module.state_dict().items():
        full = state[key.removeprefix(prefix)]
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                box = tuple(
                    slice(o, o + s)
                    for o, s in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True)
                )
                shard.tensor.copy_(full[box])
        else:
            value.copy_(full)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _watchdog(parent_pid: int | None, agent_pid: int, workdir: Path, interval: float = 0.5) -> None:
    """Exit the worker (status ``WATCHDOG_EXIT``) once the fitting process (if any) or the
    torchrun agent that started it is gone, even in the middle of a collective. When the fitting
    process died (it cannot clean up), every rank removes the work directory before it exits: the
    first rank to exit makes the agent terminate the others, possibly before their own watchdog
    woke, so the directory must be gone by then whichever rank noticed first."""
    while True:
        time.sleep(interval)
        orphaned = parent_pid is not None and not _alive(parent_pid)
        if orphaned or os.getppid() != agent_pid:
            if orphaned:
                shutil.rmtree(workdir, ignore_errors=True)
            os._exit(WATCHDOG_EXIT)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _wait_decision(workdir: Path, epoch: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    decision = workdir / f"decision_{epoch}"
    while True:
        if (workdir / "stop").exists():
            return "stop"
        if decision.exists():
            return decision.read_text().strip()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no decision from the fitting process for epoch {epoch} within {timeout_s:g} s"
            )
        time.sleep(_POLL_S)


def run_worker(workdir: Path) -> None:
    """One rank of a distributed fit (run under torchrun: RANK, WORLD_SIZE, LOCAL_RANK set)."""
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    (workdir / f"worker_{rank}.pid").write_text(str(os.getpid()))
    job = read_job(workdir)
    watch = (job["parent_pid"], os.getppid(), workdir)
    threading.Thread(target=_watchdog, args=watch, daemon=True).start()
    device = rank_device(job)
    dist.init_process_group(
        job["dist_backend"], timeout=datetime.timedelta(seconds=job["collective_timeout_s"])
    )
    try:
        _train(workdir, job, rank, world, device)
    finally:
        dist.destroy_process_group()


def read_job(workdir: Path) -> dict[str, Any]:
    """The job a :class:`DistributedFit` wrote to ``workdir`` (see :func:`write_job`)."""
    with open(workdir / "job.pkl", "rb") as f:
        return pickle.load(f)


def rank_device(job: dict[str, Any]) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` (made current) for a CUDA job, else the CPU."""
    if job["device"] != "cuda":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def build_rank(
    job: dict[str, Any], rank: int, world_size: int, device: torch.device
) -> tuple[Any, nn.Module]:
    """The rank's model (features and training arrays of the job; no network of its own) and its
    ``DistributedModelParallel``-wrapped :class:`RankStep`, holding the job's initial weights
    (checked on rank 0 after sharding). Collective: every rank calls it."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingEnv

    from personalize.models.neural.training import state_from_numpy

    model = job["model_class"](job["config"], seed=job["seed"])
    c = model.config
    model.device_ = device
    model.user_features_, model.item_features_ = job["user_features"], job["item_features"]
    for name, value in job["training"].items():
        setattr(model, name, value)
    torch.set_num_threads(c.num_threads)
    torch.manual_seed(model.seed)
    state = state_from_numpy(job["state"])
    net = model._make_net(model.user_features_, model.item_features_, "torchrec")
    net.load_state_dict(state)
    dmp = DistributedModelParallel(
        RankStep(model, net, rank, world_size).to(device),
        device=device,
        plan=sharding_plan(net, c.sharding, world_size, device.type, prefix="net."),
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        sharders=[EmbeddingBagCollectionSharder()],
    )
    load_full_state(dmp, state, prefix="net.")
    loaded = full_state(dmp, rank, prefix="net.", device=device)
    if rank == 0:
        wrong = [k for k, v in state.items() if k not in loaded or not torch.equal(loaded[k], v)]
        if wrong or set(loaded) != set(state):
            raise RuntimeError(
                f"the sharded network did not take the initial weights: {wrong or sorted(loaded)}"
            )
    return model, dmp


def _train(workdir: Path, job: dict[str, Any], rank: int, world: int, device: torch.device) -> None:
    import torch.distributed as dist

    from personalize.models.neural.training import adam, epoch_rng

    model, dmp = build_rank(job, rank, world, device)
    c = model.config
    optimizer = adam(dmp, c.learning_rate, c.weight_decay)
    for epoch in range(1, job["epochs"] + 1):
        dmp.train()
        total, batches = 0.0, 0
        for batch in model._batches(epoch_rng(model.seed, epoch)):
            loss = dmp(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        # the global batch loss is the sum over ranks of (rank loss / W); mean over batches
        summed = torch.tensor([total], dtype=torch.float64, device=device)
        dist.all_reduce(summed)
        mean_loss = float(summed.item()) / world / max(1, batches)
        weights = full_state(dmp, rank, prefix="net.", device=device)
        if rank == 0:
            _write_atomic(
                workdir / f"state_{epoch}.pt",
                lambda p, w=weights, loss=mean_loss: torch.save({"loss": loss, "state": w}, p),
            )
        if epoch == job["epochs"]:
            break
        if (
            job["parent_pid"] is not None
            and _wait_decision(workdir, epoch, job["decision_timeout_s"]) == "stop"
        ):
            break


# ------------------------------------------------------------------------------ parent side


def write_job(model: Any, workdir: Path, parent: bool = True) -> None:
    """Write ``workdir/job.pkl``: what every rank needs of ``model`` after its ``_build`` -- config,
    seed, device, collective backend, the fitting process's id (``parent``; else None: nobody
    decides, the ranks train every epoch), encoded features, training arrays and initial weights
    (pickled; read by :func:`read_job`)."""
    from personalize.models.neural.training import state_to_numpy

    c = model.config
    job = {
        "model_class": type(model),  # pickled by reference: the ranks import it
        "config": c.model_dump(),
        "seed": model.seed,
        "epochs": c.epochs,
        "device": model.device_.type,
        "dist_backend": resolve_dist_backend(c.dist_backend, model.device_.type),
        "parent_pid": os.getpid() if parent else None,
        "decision_timeout_s": DECISION_TIMEOUT_S,
        "collective_timeout_s": 600,
        "user_features": model.user_features_,
        "item_features": model.item_features_,
        "training": {
            k: getattr(model, k) for k in ("_pairs", "_context", "_weights", "_log_pop", "_pool", "_sampler")
        },
        "state": state_to_numpy(model.net_),
    }
    _write_atomic(workdir / "job.pkl", lambda p: p.write_bytes(pickle.dumps(job, protocol=5)))


def prepare_workdir(model: Any, data: InteractionData, workdir: str | Path) -> Path:
    """A work directory for a launch by hand::

        torchrun --standalone --nproc_per_node=N -m personalize.models.hybrid.distributed WORKDIR

    ``model``'s features, training arrays and initial weights, built as its fit would build them
    on ``data`` (on the CPU, or one GPU per rank with ``device: cuda``), with no fitting process:
    the ranks train all ``epochs`` and rank 0 leaves ``state_<epoch>.pt`` after every epoch:
    ``{"loss": mean training loss, "state": the full state_dict}``, the weights of the network a
    fit of ``model`` on ``data`` builds (``model.net_.load_state_dict(state)``)."""
    from personalize.models.neural.training import resolve_device, seeded

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    local = type(model)({**model.config.model_dump(), "processes": 1}, seed=model.seed)
    local.index_ = data.index
    local.device_ = resolve_device(local.config.device, local.name)
    with seeded(local.seed):
        local._build(data)
    write_job(local, workdir, parent=False)
    return workdir


class DistributedFit:
    """The fitting process's handle on a running distributed fit (see the module doc)."""

    def __init__(self, workdir: Path, process: subprocess.Popen, processes: int, log) -> None:
        self.workdir = workdir
        self.process = process
        self.processes = processes
        self._log = log
        self._closed = False

    @classmethod
    def start(cls, model: Any) -> DistributedFit:
        """Write the job of ``model`` (after its ``_build``) and launch torchrun."""
        from personalize.models.hybrid.towers import torchrec_available

        c = model.config
        n = c.processes
        device = model.device_.type
        if not torchrec_available():
            raise ConfigError(
                f"two_tower: processes = {n} shards with TorchRec, which cannot be imported here"
            )
        if device == "cuda" and n > torch.cuda.device_count():
            raise ConfigError(
                f"two_tower: processes = {n} on cuda needs one GPU per process, but torch sees "
                f"{torch.cuda.device_count()}"
            )
        workdir = Path(tempfile.mkdtemp(prefix="two_tower_dmp_"))
        try:
            write_job(model, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        log = open(workdir / "torchrun.log", "wb")  # noqa: SIM115 - closed by close()
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            "-m",
            __name__,
            str(workdir),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(c.num_threads), "PYTHONWARNINGS": "ignore"}
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        return cls(workdir, process, n, log)

    def epoch(self, epoch: int) -> tuple[float, dict[str, torch.Tensor]]:
        """Tell the workers to go on to ``epoch`` (after the first) and wait for its mean loss and
        full state; raises :class:`DistributedTrainingError` when torchrun exits first."""
        if epoch > 1:
            _write_atomic(self.workdir / f"decision_{epoch - 1}", lambda p: p.write_text("continue"))
        path = self.workdir / f"state_{epoch}.pt"
        while not path.exists():
            code = self.process.poll()
            if code is not None and not path.exists():
                raise self._failure(code, epoch)
            time.sleep(_POLL_S)
        payload = torch.load(path, weights_only=True)
        path.unlink()
        return float(payload["loss"]), payload["state"]

    def _failure(self, code: int, epoch: int) -> DistributedTrainingError:
        reports = [
            (p.stem.removeprefix("error_rank"), p.read_text(errors="replace").strip())
            for p in sorted(self.workdir.glob("error_rank*.txt"))
        ]
        self._log.flush()
        lines = (self.workdir / "torchrun.log").read_text(errors="replace").splitlines()
        if reports:
            what = "\n".join(f"rank {r}: {text.splitlines()[0]}" for r, text in reports)
            what += f"\nrank {reports[0][0]} in full:\n" + "\n".join(reports[0][1].splitlines()[1:])
        else:
            what = "no worker reported an error (killed by a signal, or out of memory?)"
        return DistributedTrainingError(
            f"two_tower: distributed training in {self.processes} processes (torchrun) exited with "
            f"status {code} before finishing epoch {epoch}.\nWorker errors:\n{what}\n"
            "Last lines of torchrun's output:\n" + "\n".join(lines[-25:])
        )

    def close(self, grace_s: float = 10.0) -> None:
        """Tell the workers to stop, wait up to ``grace_s`` for torchrun to exit, then kill its
        process group (SIGTERM, then SIGKILL); remove the work directory."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(OSError):
                (self.workdir / "stop").write_text("stop")
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.process.pid, sig)
                try:
                    self.process.wait(timeout=grace_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            self._log.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------ sharding probe


def probe_shardings(batch_sizes: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """Run under torchrun (every rank calls it): for each sharding type, compute kernel and
    per-rank batch sizes, shard a two-table ``EmbeddingBagCollection`` (rows 100 and 50, width 8,
    mean pooling) with ``DistributedModelParallel``, and check that the pooled output equals the
    unsharded collection's, then run a backward pass and an optimiser step (dense: torch's Adam
    over the parameters; fused: fbgemm's optimiser inside the backward, ``exact_row_wise_adagrad``
    and ``adam``). Returns one record per case on rank 0: sharding, kernel, optimiser, batch
    sizes, ``works``, and the error (type and first line) when it fails."""
    import torch.distributed as dist
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingEnv, ShardingPlan

    rank, world = dist.get_rank(), dist.get_world_size()
    sizes_list = batch_sizes or [[4] * world, [3 + (r == 0) for r in range(world)]]
    tables = [("a", 100), ("b", 50)]

    def collection() -> nn.Module:
        torch.manual_seed(0)
        return EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=n, embedding_dim=8, num_embeddings=r, feature_names=[n], pooling=PoolingType.MEAN
                )
                for n, r in tables
            ],
            device=torch.device("cpu"),
        )

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bags = collection()

        def forward(self, kjt):
            return self.bags(kjt).values()

    records = []
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    cases = [("dense", "adam (torch)"), ("fused", "exact_row_wise_adagrad"), ("fused", "adam")]
    for sharding in SHARDINGS:
        for kernel, optimizer in cases:
            for sizes in sizes_list:
                record = {
                    "sharding": sharding,
                    "kernel": kernel,
                    "optimizer": optimizer,
                    "batch_sizes": sizes,
                    "works": False,
                    "error": "",
                }
                try:
                    reference = Holder()
                    held = Holder()
                    fused = (
                        {"optimizer": EmbOptimType(optimizer), "learning_rate": 0.01}
                        if kernel == "fused"
                        else {}
                    )
                    sharder = EmbeddingBagCollectionSharder(fused_params=fused or None)
                    plan = ShardingPlan({"bags": collection_plan(held.bags, sharding, world, "cpu", kernel)})
                    dmp = DistributedModelParallel(
                        held,
                        device=torch.device("cpu"),
                        plan=plan,
                        env=ShardingEnv.from_process_group(dist.group.WORLD),
                        sharders=[sharder],
                    )
                    load_full_state(dmp, reference.state_dict())
                    g = torch.Generator().manual_seed(rank)
                    b = sizes[rank]
                    ids = [torch.randint(0, r, (b,), generator=g) for _, r in tables]
                    kjt = KeyedJaggedTensor(
                        keys=[n for n, _ in tables],
                        values=torch.cat(ids),
                        lengths=torch.ones(len(tables) * b, dtype=torch.long),
                    )
                    out = dmp(kjt)
                    expected = reference(kjt)
                    if not torch.allclose(out, expected, rtol=1e-6, atol=1e-7):
                        raise AssertionError("sharded pooled output differs from the unsharded collection's")
                    out.sum().backward()
                    params = [p for p in dmp.parameters() if p.grad is not None]
                    if params:
                        torch.optim.Adam(params, lr=0.01).step()
                    record["works"] = True
                except Exception as e:
                    first = (str(e).strip().splitlines() or [""])[0]
                    record["error"] = f"{type(e).__name__}: {first}"[:300]
                dist.barrier()
                records.append(record)
    return records if rank == 0 else []


# ------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> int:
    """``torchrun ... -m personalize.models.hybrid.distributed WORKDIR`` (one rank of a fit), or
    ``... --probe OUT.json`` (the sharding probe; rank 0 writes the records)."""
    parser = argparse.ArgumentParser(prog="python -m personalize.models.hybrid.distributed")
    parser.add_argument("workdir", nargs="?", help="work directory written by DistributedFit")
    parser.add_argument("--probe", metavar="OUT_JSON", help="run the sharding probe, write its table")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    if args.probe:
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        try:
            records = probe_shardings()
        finally:
            dist.destroy_process_group()
        if rank == 0:
            Path(args.probe).write_text(json.dumps(records, indent=1))
        return 0
    if not args.workdir:
        parser.error("give the work directory (or --probe OUT_JSON)")
    workdir = Path(args.workdir)
    try:
        run_worker(workdir)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            with contextlib.suppress(OSError):
                (workdir / f"error_rank{rank}.txt").write_text(
                    f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
                )
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "SHARDINGS",
    "DistBackend",
    "DistributedFit",
    "DistributedTrainingError",
    "Sharding",
    "all_gather_rows",
    "balanced_ranks",
    "build_rank",
    "collection_plan",
    "full_state",
    "load_full_state",
    "prepare_workdir",
    "probe_shardings",
    "rank_device",
    "rank_loss",
    "rank_rows",
    "read_job",
    "sharding_plan",
    "write_job",
]
