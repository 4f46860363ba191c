"""torchrun with 2 CPU processes (gloo) against one process with the same global batch.

"Consistent" means: every step reads exactly the same samples (the ranks' shards partition
the single-process batch), and the 2-process run does, operation for operation, what one
process does when it evaluates the global batch as two half-batches and averages their
gradients: so the final weights are bitwise equal to that one-process run's, every logged
train loss agrees to 1e-4 relative (the per-rank means are averaged in a different order,
then rounded to 6 digits), and the train and test errors of every logged step are equal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stnkit.train._data import BatchOrder

from ._helpers import REPO, metrics, stnkit_env, weights

ARGS = ["--model", "st-cnn-aff", "--data", "mnist", "--data-dir", "embedded", "--schedule", "cpu",
        "--batch-size", "16", "--train-size", "256", "--test-size", "64", "--iterations", "6",
        "--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1", "--num-threads", "1",
        "--device", "cpu", "--quiet",
        # plain SGD: Adam's m / sqrt(v) magnifies rounding differences of near-zero gradients
        "--optimizer", "sgd", "--lr", "0.02", "--momentum", "0.9"]


def test_shards_partition_the_global_batch():
    order = BatchOrder(100, 12, seed=3)
    for step in (0, 7, 8, 9, 50):  # 100 is not a multiple of 12: batches straddle epochs
        whole = order.indices(step)
        parts = [order.indices(step, rank=r, world_size=4) for r in range(4)]
        assert torch.equal(torch.cat(parts), whole)
    epoch0 = torch.cat([order.indices(s) for s in range(8)])[:96]
    assert len(set(epoch0.tolist())) == 96  # no repeats inside an epoch
    assert torch.equal(BatchOrder(100, 12, seed=3).indices(9), order.indices(9))  # stateless


def _as_two_ranks(monkeypatch) -> list[int]:
    """Make the training loop of this process evaluate each batch as 2 ranks of DDP do: two
    half-batches (rank 0's samples, then rank 1's), each through the whole forward pass, the
    loss the average of their means. Returns the list of batch sizes it was called with."""
    from stnkit.train import loop

    whole, calls = loop.forward_loss, []

    def halves(net, x, y, **kw):
        calls.append(len(x))
        h = len(x) // 2
        (la, lossa), (lb, lossb) = (whole(net, x[s], y[s], **kw)
                                    for s in (slice(None, h), slice(h, None)))
        return torch.cat([la, lb]), 0.5 * lossa + 0.5 * lossb

    monkeypatch.setattr(loop, "forward_loss", halves)
    return calls


@pytest.mark.slow  # ~50-70 s on 2 cores (pytest --durations)
def test_torchrun_two_processes_match_one_process(tmp_path, monkeypatch):
    """The reference is one process evaluating each global batch of 16 as two half-batches
    of 8 whose mean losses are averaged (:func:`_as_two_ranks`), not as one batch of 16.

    Not one batch of 16: the same gradient mathematically, but not in float32. The batch
    reductions of the weight gradients run in another order, so step 1's gradients differ by
    a few ulp (at most 1.9e-8) and the weights after it by 7e-9. ReLU and max-pool are kinks:
    at step 3 one ReLU input of the classifier is -3.4e-8 in one run and +9.4e-9 in the other,
    one unit's gradient passes in one and not in the other, and the gradients jump by 2.7e-4
    (of 0.34); momentum carries that on and the kinks crossed multiply (1, 16, 83, 269 at
    steps 3-6). After 6 steps the weights differ by up to 1.5e-4 (0.4 % of that tensor's
    update |w_6 - w_0|; up to 2.4 % in others; AMD EPYC, AVX2): rounding made chaotic, not a
    DDP bug, and no tolerance on it is both safe and tight.

    Bitwise: each rank computes its 8-sample mean's gradient with the same kernels as one
    half-batch here; DDP halves the two and sums them (power-of-two scalings are exact, a sum
    of two terms commutes), as autograd here scales each half's gradient by 0.5 and adds the
    two. So any difference is a bug. Checked by breaking DDP on purpose: no gradient sync,
    rank 1 reading rank 0's shard, one parameter left out of DDP, gradients summed instead of
    averaged, a rank-dependent forward pass (1e-3 noise on the input) each moved some tensor
    by 1e-3 to 7e-2, and the metrics checks fail first.
    """
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    entry = Path(__file__).with_name("_torchrun_entry.py")  # stnkit train + a thread check
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(entry), "train", *ARGS, "--out", str(ddp)]
    res = subprocess.run(cmd, env=stnkit_env(), cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"stdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-3000:]}"
    assert res.stdout.count("st-cnn-aff on mnist: step 6") == 1, res.stdout  # rank 0 alone
    from stnkit.cli import main

    calls = _as_two_ranks(monkeypatch)
    assert main(["train", *ARGS, "--out", str(single)]) == 0
    assert calls == [16] * 6, calls  # the reference did split every batch
    md, ms = metrics(ddp), metrics(single)
    assert [(m["step"], m["split"]) for m in md] == [(m["step"], m["split"]) for m in ms]
    for a, b in zip(md, ms, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(b["loss"]), (a, b)
        assert a["error"] == b["error"] and a["lr"] == b["lr"], (a, b)
    wd, ws = weights(ddp), weights(single)
    assert wd.keys() == ws.keys()
    differ = {k: f"{(wd[k].double() - ws[k].double()).abs().max().item():.3g}" for k in ws
              if not torch.equal(wd[k], ws[k])}
    assert not differ, f"max |weight difference| per tensor (expected bitwise equal): {differ}"
    import json

    rec = json.loads((ddp / "checkpoint.json").read_text())
    assert rec["world_size"] == 2 and rec["rng"]["torch"] == 2
    # a 2-process checkpoint continues exactly only with 2 processes: say so, change nothing
    from stnkit.train import CheckpointError, resume

    before = (ddp / "checkpoint.json").read_bytes()
    with pytest.raises(CheckpointError, match=r"written by 2 process\(es\); resume it with the same"):
        resume(ddp, iterations=8, progress=False)
    assert (ddp / "checkpoint.json").read_bytes() == before


@pytest.mark.slow  # ~50-70 s on 2 cores (pytest --durations)
def test_torchrun_reproduce_joins_once_and_matches_one_process(tmp_path):
    """``torchrun ... stnkit reproduce``: every cell trains once (one log line each, from rank
    0), the tables equal a single-process reproduction's, and a rerun finds every cell done.
    (Each cell used to join and leave the process group itself; the second join failed.)"""
    entry = Path(__file__).with_name("_torchrun_entry.py")
    args = ["reproduce", "table1", "--variants", "R,E", "--models", "fcn,st-fcn-aff", "--seeds",
            "1", "--dry-run", "--data-dir", "embedded", "--device", "cpu", "--quiet"]
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(entry), *args, "--out", str(ddp)]
    for how in ("trained", "done before"):
        res = subprocess.run(cmd, env=stnkit_env(), cwd=REPO, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, f"stdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-3000:]}"
        lines = [s for s in res.stdout.splitlines() if s.startswith("[")]
        assert len(lines) == 4 and all(f": {how}," in s for s in lines), res.stdout
        assert res.stdout.count("| model | R | E |") == 1, res.stdout
    from stnkit.cli import main

    assert main([*args, "--out", str(single)]) == 0
    assert (ddp / "results.csv").read_text() == (single / "results.csv").read_text()


def test_setup_under_torchrun_on_cuda_picks_the_local_device(monkeypatch):
    """The CUDA branch of ``setup`` (no GPU needed: the device calls and the group are faked).
    An ``import torch...`` statement inside ``setup`` once made ``torch`` a local name there,
    so this branch raised UnboundLocalError before it reached the group."""
    import torch.distributed as tdist

    from stnkit.train import distributed

    picked = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)  # a group someone else made
    monkeypatch.setattr(tdist, "get_rank", lambda: 1)
    monkeypatch.setattr(tdist, "get_world_size", lambda: 2)
    d = distributed.setup(torch.device("cuda"))
    assert d.device == torch.device("cuda", 1) and picked == [torch.device("cuda", 1)]
    assert (d.rank, d.world_size, d.local_rank, d.initialised_here) == (1, 2, 1, False)
