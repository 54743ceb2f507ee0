"""Train a small MLP digit classifier on this rank's shard; write metrics.json to the outputs.

Runs under `fleet up` (rank and world size from FLEET_RANK / FLEET_NODE_RANK and FLEET_WORLD_SIZE /
FLEET_NUM_NODES) or standalone (rank 0 of 1). Deterministic: the same seed and rank give the same
metrics.json, byte for byte.
"""
from __future__ import annotations

import os

# One BLAS thread per process: 8 ranks share a couple of cores, and a fixed thread count keeps
# floating-point reductions in the same order from run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from digits_data import CLASSES, make_dataset  # noqa: E402

TRAIN_SIZE = 24000
TEST_SIZE = 1000
HIDDEN = 64


def rank_and_world() -> tuple[int, int]:
    rank = int(os.environ.get("FLEET_RANK") or os.environ.get("FLEET_NODE_RANK") or 0)
    world = int(os.environ.get("FLEET_WORLD_SIZE") or os.environ.get("FLEET_NUM_NODES") or 1)
    if world < 1 or not 0 <= rank < world:
        sys.exit(f"train.py: rank {rank} is outside a world of {world}")
    return rank, world


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(-np.log(probs[rows, labels] + 1e-12).mean())
    probs[rows, labels] -= 1.0
    return loss, probs / len(labels)


class MLP:
    def __init__(self, rng: np.random.Generator, inputs: int, hidden: int, outputs: int):
        self.w1 = rng.normal(0, np.sqrt(2.0 / inputs), (inputs, hidden))
        self.b1 = np.zeros(hidden)
        self.w2 = rng.normal(0, np.sqrt(1.0 / hidden), (hidden, outputs))
        self.b2 = np.zeros(outputs)
        self.velocity = [np.zeros_like(p) for p in self.params()]

    def params(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        return hidden, hidden @ self.w2 + self.b2

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, momentum: float = 0.9) -> float:
        hidden, logits = self.forward(x)
        loss, d_logits = softmax_cross_entropy(logits, y)
        d_hidden = (d_logits @ self.w2.T) * (hidden > 0)
        grads = [x.T @ d_hidden, d_hidden.sum(0), hidden.T @ d_logits, d_logits.sum(0)]
        for param, grad, vel in zip(self.params(), grads, self.velocity):
            vel *= momentum
            vel -= lr * grad
            param += vel
        return loss

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.forward(x)[1].argmax(axis=1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="hidden units (a sweep parameter)")
    args = parser.parse_args(argv)
    rank, world = rank_and_world()

    # Every rank makes the same data set and keeps its own slice of it.
    x_all, y_all = make_dataset(TRAIN_SIZE, args.seed)
    x_test, y_test = make_dataset(TEST_SIZE, args.seed + 1)
    x, y = x_all[rank::world], y_all[rank::world]
    print(f"rank {rank}/{world}: {len(y)} training images, {len(y_test)} held out, seed {args.seed}", flush=True)

    model = MLP(np.random.default_rng(args.seed), x.shape[1], args.hidden, CLASSES)
    shuffle = np.random.default_rng(args.seed * 1000 + rank)
    history = []
    for epoch in range(1, args.epochs + 1):
        order = shuffle.permutation(len(y))
        losses = [model.step(x[b], y[b], args.lr) for b in np.array_split(order, max(1, len(y) // args.batch))]
        history.append(round(float(np.mean(losses)), 6))
        print(f"epoch {epoch:3d}/{args.epochs} loss {history[-1]:.4f}", flush=True)

    accuracy = model.accuracy(x_test, y_test)
    _, test_logits = model.forward(x_test)
    test_loss, _ = softmax_cross_entropy(test_logits, y_test)
    metrics = {
        "accuracy": round(accuracy, 6),
        "loss": round(test_loss, 6),
        "train_accuracy": round(model.accuracy(x, y), 6),
        "loss_history": history,
        "rank": rank,
        "world_size": world,
        "shard_size": int(len(y)),
        "test_size": TEST_SIZE,
        "epochs": args.epochs,
        "seed": args.seed,
    }
    out_dir = Path(os.environ.get("FLEET_OUTPUT_DIR") or "outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(f"rank {rank}/{world}: test accuracy {accuracy:.3f}, test loss {test_loss:.4f} "
          f"-> {out_dir / 'metrics.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
