"""Check that the two-tower's towers compute the same on CUDA as on the CPU.

Builds a user tower and an item tower (plain-PyTorch embedding bags, as a model on CUDA uses
them) with seeded weights, copies them to the GPU, and runs one forward and backward pass of the
sampled-softmax loss on the same seeded batch on both devices. Prints the torch version, the CUDA
device's name and the largest absolute difference of the scores, the loss and every parameter's
gradient; exits 1 when one exceeds the tolerance (default 1e-4), 0 otherwise, and 0 with a message
when torch finds no CUDA device.

    python benchmarks/device_check.py [--tolerance 1e-4] [--batch 512]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from personalize.models.hybrid.towers import TableSpec, Tower, TwoTowerNet


def build(seed: int) -> TwoTowerNet:
    """Towers with MovieLens-like tables (IDs, a few attributes, a genre bag, a 384-d text input)."""
    torch.manual_seed(seed)
    users = [TableSpec("user_id", 1000, 32), TableSpec("age", 8, 16), TableSpec("occupation", 22, 16)]
    items = [TableSpec("item_id", 2000, 32), TableSpec("genres", 20, 16), TableSpec("year", 10, 16)]
    user = Tower(users, [64], 32, normalize=True, backend="torch")
    item = Tower(items, [64], 32, dense_dim=384, dense_proj=32, normalize=True, backend="torch", bias=True)
    return TwoTowerNet(user, item, temperature=0.1)


def batch(tables: list[TableSpec], n: int, g: torch.Generator, bag: str | None = None):
    """Jagged ids in KeyedJaggedTensor layout: one id per row and feature, 1-3 for ``bag``."""
    lengths = torch.stack(
        [
            torch.randint(1, 4, (n,), generator=g) if t.name == bag else torch.ones(n, dtype=torch.long)
            for t in tables
        ]
    )
    values = torch.cat(
        [
            torch.randint(0, t.num_embeddings, (int(lengths[j].sum()),), generator=g)
            for j, t in enumerate(tables)
        ]
    )
    return values, lengths.reshape(-1)


def step(net: TwoTowerNet, inputs: dict[str, torch.Tensor], device: torch.device):
    """Scores, loss and gradients of one sampled-softmax step (in-batch negatives) on ``device``."""
    x = {k: v.to(device) for k, v in inputs.items()}
    net.zero_grad(set_to_none=True)
    u = net.user(x["user_values"], x["user_lengths"], None)
    v = net.item(x["item_values"], x["item_lengths"], x["text"])
    scores = net.scores(u, v)
    loss = F.cross_entropy(scores, torch.arange(len(u), device=device))
    loss.backward()
    grads = {name: p.grad.detach().cpu() for name, p in net.named_parameters() if p.grad is not None}
    return scores.detach().cpu(), loss.detach().cpu(), grads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=1e-4, help="Largest allowed absolute difference.")
    parser.add_argument("--batch", type=int, default=512, help="Pairs in the batch.")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})")
    if not torch.cuda.is_available():
        print("no CUDA device found: nothing to compare (the CPU path is covered by the test suite)")
        return 0
    device = torch.device("cuda", torch.cuda.current_device())
    print(f"CUDA device: {torch.cuda.get_device_name(device)}")
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
    torch.backends.cudnn.allow_tf32 = False

    net = build(seed=0)
    g = torch.Generator().manual_seed(1)
    uv, ul = batch(net.user.bags.tables, args.batch, g)
    iv, il = batch(net.item.bags.tables, args.batch, g, bag="genres")
    text = F.normalize(torch.randn(args.batch, 384, generator=g), dim=1)
    inputs = {"user_values": uv, "user_lengths": ul, "item_values": iv, "item_lengths": il, "text": text}

    cpu_scores, cpu_loss, cpu_grads = step(net, inputs, torch.device("cpu"))
    net.to(device)
    gpu_scores, gpu_loss, gpu_grads = step(net, inputs, device)

    diffs = {
        "scores": float((gpu_scores - cpu_scores).abs().max()),
        "loss": float((gpu_loss - cpu_loss).abs()),
        "gradients": max(float((gpu_grads[k] - cpu_grads[k]).abs().max()) for k in cpu_grads),
    }
    missing = sorted(set(cpu_grads) ^ set(gpu_grads))
    for name, value in diffs.items():
        print(f"max abs difference, {name}: {value:.3g}")
    worst = max(diffs.values())
    if missing or worst > args.tolerance:
        print(
            f"FAIL: differences above {args.tolerance:g}"
            + (f"; gradients only on one side: {missing}" if missing else "")
        )
        return 1
    print(
        f"OK: CUDA matches the CPU within {args.tolerance:g} ({len(cpu_grads)} parameter gradients compared)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
