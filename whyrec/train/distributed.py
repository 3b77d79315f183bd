"""Data-parallel training on ``torch.distributed``: ``torchrun --nproc-per-node N $(which whyrec) train ...``.

Every rank builds the same model from the same seed and draws the same epoch (the sampler depends
only on ``(seed, epoch)``); each global batch of ``B`` rows is cut into ``N`` consecutive shares and
rank ``r`` computes the loss of its own share of ``b_r`` rows. Its loss is scaled by ``b_r / B`` and
the gradients are **summed** over the ranks (one ``all_reduce`` per parameter), so that for a loss
that is a mean over the batch's rows (BPR, BCE and their L2 terms)::

    Σ_r (b_r / B) ∇ mean_{rows of r} ℓ  =  ∇ mean_{all B rows} ℓ

— every rank then takes the same Adam step, and the weights equal one process's with batch ``B``
to float tolerance (tested). Terms that are not a mean over rows (the alignment objective's Pearson
correlation, the ELBO's reparameterization noise) are computed per share, a valid but not identical
estimate. Evaluation is sharded: every rank scores a contiguous share of the users and the metric
sums are all-reduced (:meth:`DataParallel.sum`), so every rank sees one process's metrics. Rank 0
alone early-stops (its decision is broadcast), checkpoints, resumes (its restored weights and Adam
state are broadcast), keeps the best epoch's weights (broadcast at the end, before the final test
evaluation) and writes the run folder; the other ranks write nothing and exit with status 0. Backend: gloo on CPU, NCCL on CUDA (``--device cuda``: rank ``r``
uses GPU ``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["Local", "DataParallel", "from_environment", "environment_rank"]


def environment_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise."""
    return int(os.environ.get("RANK", 0)) if int(os.environ.get("WORLD_SIZE", 1)) > 1 else 0


class Local:
    """One process: every row of a batch is this rank's, nothing to reduce."""

    rank, world = 0, 1

    def share(self, lo: int, hi: int) -> tuple[int, int]:
        return lo, hi

    def reduce(self, opt, parts: dict, weight: float) -> dict:
        return parts

    def sync(self, trainer) -> None:
        pass

    def agree(self, flag: bool) -> bool:
        return flag

    def sum(self, array):
        """``array`` (numpy) summed over the ranks: itself here."""
        return array

    def share_weights(self, model) -> None:
        pass

    def close(self) -> None:
        pass


class DataParallel(Local):
    """The strategy of the module docstring over the default process group."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def share(self, lo: int, hi: int) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of a global batch -> this rank's consecutive share (maybe empty)."""
        per = -(-(hi - lo) // self.world)
        start = min(hi, lo + self.rank * per)
        return start, min(hi, start + per)

    def reduce(self, opt, parts: dict, weight: float) -> dict:
        """Sum the (already weighted) gradients of ``opt``'s parameters and ``weight ·`` the logged
        parts over the ranks (gradients in place, parts returned)."""
        for group in opt.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                self.dist.all_reduce(p.grad)
        names = sorted(parts)
        device = opt.param_groups[0]["params"][0].device
        values = torch.stack([parts[k].detach().float().to(device) * weight for k in names])
        self.dist.all_reduce(values)
        return dict(zip(names, values))

    def sync(self, trainer) -> None:
        """Give every rank rank 0's starting point: weights, Adam state and first epoch (a resumed run)."""
        box = [trainer.first_epoch, trainer.opt.state_dict() if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        trainer.first_epoch = int(box[0])
        if self.rank != 0:
            trainer.opt.load_state_dict(box[1])
        with torch.no_grad():
            for t in trainer.model.state_dict().values():
                self.dist.broadcast(t, src=0)
        trainer.model.invalidate_cache()

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank."""
        box = [bool(flag)]
        self.dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def sum(self, array):
        """A numpy ``array`` summed over the ranks (float64; every rank gets the sum): what sharded
        evaluation (:func:`whyrec.evaluate.evaluate_ranking`'s ``strategy``) reduces."""
        import numpy as np

        backend = self.dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64)).to(device)
        self.dist.all_reduce(t)
        return t.cpu().numpy()

    def share_weights(self, model) -> None:
        """Rank 0's weights on every rank (after training: rank 0 alone restored the best epoch's)."""
        with torch.no_grad():
            for t in model.state_dict().values():
                self.dist.broadcast(t, src=0)
        model.invalidate_cache()

    def close(self) -> None:
        """Once training and its evaluation are over, on every rank: wait for the others, then tear the process group
        down. A rank that exits with gloo's threads still alive aborts (``terminate called without
        an active exception``) and takes torchrun's exit status with it."""
        if self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()


def from_environment(device: str = "auto") -> Optional[DataParallel]:
    """Under torchrun (``WORLD_SIZE`` > 1): initialise the default process group once (NCCL for a
    CUDA device, else gloo) and return the :class:`DataParallel` strategy; otherwise ``None``."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return DataParallel()
