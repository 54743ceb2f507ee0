"""A minimal DDP step: every GPU process joins the group torchrun set up, all-reduces its rank, and
rank 0 writes what the group saw to $FLEET_OUTPUT_DIR/result.json. NCCL on GPUs, gloo without."""
import json
import os

import torch
import torch.distributed as dist


def main() -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)          # reads MASTER_ADDR/PORT, RANK, WORLD_SIZE from torchrun
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    total = torch.tensor([float(rank)], device=device)
    dist.all_reduce(total)                    # 0 + 1 + … + (world - 1)
    print(f"rank {rank}/{world} local {local} sum {total.item():g}", flush=True)
    if rank == 0:
        out = os.environ.get("FLEET_OUTPUT_DIR", "outputs")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"world_size": world, "sum_of_ranks": total.item(), "backend": backend}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
