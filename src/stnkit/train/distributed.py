"""Running under ``torchrun``: process group, sharding helpers, agreement between ranks.

``torchrun --nproc_per_node=N -m stnkit train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them and joins the group (gloo on CPU, NCCL on CUDA).
Without them everything here is a no-op and the run is a plain single process. Rank 0 alone
writes files; every decision that ends a run (Ctrl-C, divergence, an error during setup) is
agreed on by all ranks so none is left waiting.
"""

from __future__ import annotations

import datetime
import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Dist", "launch_rank", "setup"]


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo moves CPU ones.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` (float64 vector) over ranks; ``t`` itself is left as it was."""
        if not self.enabled:
            return t
        buf = t.to(self._comm_device(), torch.float64).clone()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf.to(t.device)

    def agree(self, ok: bool) -> bool:
        """True on every rank if ``ok`` is true on every rank."""
        if not self.enabled:
            return ok
        flag = torch.tensor([1.0 if ok else 0.0], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() == 1.0)

    def raise_unless_all_ok(self, err: BaseException | None, message: str) -> None:
        """Stop every rank together if any rank failed: this rank re-raises its own ``err``;
        a rank that did not fail raises RuntimeError(``message``)."""
        if not self.agree(err is None):
            if err is not None:
                raise err
            raise RuntimeError(message)

    def gather(self, t: Tensor) -> list[Tensor]:
        """``t`` from every rank (same shape and dtype everywhere), in rank order, on CPU."""
        if not self.enabled:
            return [t.cpu()]
        src = t.to(self._comm_device())
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        dist.all_gather(out, src)
        return [o.cpu() for o in out]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def teardown(self, *, finished: bool) -> None:
        """Leave the process group this process joined.

        ``finished``: every rank got here normally, so they first wait for each other and
        none destroys the group while another is still inside a collective. (After a failure
        a rank may be gone or stuck elsewhere: then each leaves on its own.)
        """
        if self.initialised_here and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
            self.initialised_here = False


def launch_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 outside torchrun), known
    before any process group is joined."""
    return int(os.environ.get("RANK", "0"))


def setup(device: torch.device) -> Dist:
    """Join the process group ``torchrun`` describes, or return a single-process ``Dist``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    rank = int(os.environ["RANK"])  # required with WORLD_SIZE > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    here = False
    if not dist.is_initialized():
        # torch 2.13: importing torch._inductor (DDP and use_deterministic_algorithms do)
        # once the default group exists keeps the group alive past destroy_process_group;
        # its gloo threads then outlive the interpreter and can abort the process at exit.
        # Imported before the group is made, it holds no reference to it. (import_module:
        # an import statement here would make ``torch`` a local name of this function.)
        importlib.import_module("torch._inductor.config")

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
        here = True
    if dist.get_rank() != rank:  # pragma: no cover - a launcher that disagrees with itself
        raise RuntimeError(f"train: RANK={rank} but the process group says {dist.get_rank()}")
    return Dist(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank,
                initialised_here=here, device=device)
