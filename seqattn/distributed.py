"""Training on several processes: DistributedDataParallel, gloo on CPU and NCCL on CUDA.

Every rank holds the same token batches; at each step rank r takes rows r, r+N, r+2N, ... of the
batch, so N processes see the same global batch as one process and (without dropout) follow the
same loss curve. Only rank 0 logs, validates and writes files. `seqattn train --nproc N` starts the
ranks itself (as processes, the way torchrun does); under `torchrun` the ranks come from its
environment (RANK, WORLD_SIZE, LOCAL_RANK).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import SeqattnError

# test hook: "R" makes rank R fail right after joining the others, "R:before-joining" just before
# (to check that every rank stops either way)
FAIL_RANK_ENV = "SEQATTN_TEST_FAIL_RANK"


@dataclass
class Dist:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        """Return the ranks torchrun (or `launch`) put into the environment; one process without them."""
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        return cls()

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (gloo on CPU, NCCL on CUDA); return this rank's device (device itself
        for one process)."""
        if not self.active:
            return device
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise SeqattnError(f"{self.world} processes need one GPU each: cuda:{self.local_rank} does not "
                                   f"exist ({torch.cuda.device_count()} GPU(s) found)")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else os.cpu_count()) // self.world))
        injected = os.environ.get(FAIL_RANK_ENV, "")
        if injected == f"{self.rank}:before-joining":   # the others then wait in init_process_group
            raise SeqattnError(f"rank {self.rank}: failure injected by {FAIL_RANK_ENV} before joining")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                    world_size=self.world, timeout=timedelta(minutes=30))
        if injected == str(self.rank):
            raise SeqattnError(f"rank {self.rank}: failure injected by {FAIL_RANK_ENV}")
        return device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Return what training steps call: model, or for several ranks its DistributedDataParallel wrapper
        (which averages the gradients over the ranks)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def share(self, batch):
        """Return this rank's rows of batch (rows rank, rank + world, ...); the whole batch for one process."""
        return batch.rows(self.rank, self.world) if self.active else batch

    def same_rate(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        """Give every rank rank 0's learning rate (a plateau schedule changes it on rank 0 only)."""
        if not self.active:
            return
        lr = self.from_main(optimizer.param_groups[0]["lr"], device)
        for group in optimizer.param_groups:
            group["lr"] = lr

    def main_choice(self, value, choices: list, device: torch.device):
        """Return rank 0's value, one of choices, on every rank."""
        if not self.active:
            return value
        return choices[int(self.from_main(choices.index(value), device))]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, value: float, device: torch.device) -> float:
        """Return value summed over the ranks."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t)

    def from_main(self, value: float, device: torch.device) -> float:
        """Return rank 0's value on every rank."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t)


def peer_failed(e: BaseException) -> bool:
    """Return whether e says that another rank went away (its own error is the one to report)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int) -> int:
    """Run `seqattn <argv>` as nproc local processes (ranks 0..nproc-1, as torchrun would); return the
    exit code. When one rank fails the others are stopped; its one-line error is what the user sees."""
    import subprocess
    import time

    env = {**os.environ, "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
           "MASTER_PORT": os.environ.get("MASTER_PORT", str(_free_port())), "WORLD_SIZE": str(nproc)}
    procs = [subprocess.Popen([sys.executable, "-m", "seqattn", *argv],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
    code = 0
    try:
        while True:
            codes = [p.poll() for p in procs]   # every one, each time: a rank may fail while another waits
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                code = failed[0]
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        code = 130
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return code
