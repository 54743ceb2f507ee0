"""A NumPy training loop that survives losing its machine: it checkpoints into
$FLEET_CHECKPOINT_DIR and resumes from there (`fleet up` restores it on new machines).

What your own code needs (docs/managed-runs.md):
1. at start, load the checkpoint from $FLEET_CHECKPOINT_DIR if there is one;
2. every so often, write it there: a temporary file, then os.replace (a reader never sees half);
3. on SIGTERM (a stop, a budget stop, a spot interruption notice), write it once more and exit.
Everything else (uploading only what changed, restoring it, counting attempts) is fleet's.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

STEPS = int(os.environ.get("STEPS", "300"))
CHECKPOINT_EVERY = 20
CKPT = Path(os.environ.get("FLEET_CHECKPOINT_DIR", "checkpoint"))
OUT = Path(os.environ.get("FLEET_OUTPUT_DIR", "outputs"))


def data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed linear-regression problem; each rank trains on its own shard."""
    rng = np.random.default_rng(1000 + rank)
    x = rng.normal(size=(4096, 32))
    w_true = np.linspace(-1, 1, 32)
    return x, x @ w_true + 0.01 * rng.normal(size=4096)


def save(step: int, w: np.ndarray, losses: list[float]) -> None:
    CKPT.mkdir(parents=True, exist_ok=True)
    tmp = CKPT / "weights.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, w=w)
    os.replace(tmp, CKPT / "weights.npz")
    meta = CKPT / "state.json.tmp"
    meta.write_text(json.dumps({"step": step, "losses": losses}))
    os.replace(meta, CKPT / "state.json")   # written last: state.json always names saved weights


def load() -> tuple[int, np.ndarray | None, list[float]]:
    try:
        state = json.loads((CKPT / "state.json").read_text())
        w = np.load(CKPT / "weights.npz")["w"]
    except (OSError, ValueError, KeyError):
        return 0, None, []
    return int(state["step"]), w, list(state["losses"])


def main() -> int:
    rank = int(os.environ.get("FLEET_NODE_RANK", "0"))
    attempt = os.environ.get("FLEET_ATTEMPT", "1")
    x, y = data(rank)
    step, w, losses = load()
    if w is None:
        w = np.zeros(x.shape[1])
    print(f"rank {rank}: attempt {attempt}, {'resumed at step ' + str(step) if step else 'fresh start'}", flush=True)

    def stop(signum, _frame):
        save(step, w, losses)
        print(f"rank {rank}: checkpointed at step {step} on signal {signum}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    while step < STEPS:
        grad = x.T @ (x @ w - y) / len(y)
        w = w - 0.05 * grad
        step += 1
        losses.append(float(np.mean((x @ w - y) ** 2)))
        if step % CHECKPOINT_EVERY == 0:
            save(step, w, losses)
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.02")))   # stands in for real work per step
    save(step, w, losses)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "metrics.json").write_text(json.dumps({"rank": rank, "steps": step, "attempt": int(attempt),
                                                  "final_loss": losses[-1]}, indent=2) + "\n")
    print(f"rank {rank}: done, {step} steps, loss {losses[-1]:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
