"""The training loop: ``train(config)`` and ``resume(run_dir)``.

A run directory, written by rank 0 only::

    RUN_DIR/
      config.json                  the resolved TrainConfig
      metrics.jsonl                {"step", "split": "train"|"test", "loss", "error" (%), "lr",
                                    "images_per_s" (train lines), "time" (s)} a line
      checkpoint.safetensors       model weights        } see stnkit.train.checkpoint
      checkpoint.state.safetensors optimizer + RNG      }
      checkpoint.json              step, config, optimizer, scheduler, rng, metrics, ...
      snapshots/inputs.safetensors the first N test samples ("images", "labels")
      snapshots/step_XXXXXXXX.safetensors  at step 0 and every evaluation, per transformer i:
                                   "output_i", "theta_i"; metadata step, count, transform_i
      eval.json                    written by evaluate() / `stnkit eval`

The loop is iteration based;
each iteration reads the batch :class:`~stnkit.train._data.BatchOrder` assigns to it, so a
run killed at any point and resumed from its last checkpoint retraces the same steps and
ends, on CPU, with bitwise the same weights as a run never interrupted.

Stops: the last iteration; Ctrl-C / SIGTERM (finish the current iteration, write a
checkpoint, raise :class:`TrainingInterrupted`); a non-finite loss or non-finite weights
(raise :class:`TrainingDiverged`, the last good checkpoint is kept untouched).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stnkit.train import checkpoint as ckpt
from stnkit.train._data import BatchOrder, Split, load_split
from stnkit.train.config import TrainConfig, apply_dry_run, check_config, from_dict, to_dict
from stnkit.train.distributed import Dist, launch_rank, setup

__all__ = ["RunDirError", "TrainingDiverged", "TrainingInterrupted", "resume", "train"]

SNAPSHOTS = "snapshots"


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) became NaN/Inf; the last good checkpoint was kept."""

    def __init__(self, message: str, *, step: int, checkpoint_step: int | None):
        super().__init__(message)
        self.step = step
        self.checkpoint_step = checkpoint_step


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training; a checkpoint of ``step`` was written."""

    def __init__(self, message: str, *, step: int, run_dir: str):
        super().__init__(message)
        self.step = step
        self.run_dir = run_dir


class RunDirError(ValueError):
    """A run directory that is missing, already used, or not a run."""


# ---------------------------------------------------------------------------- hooks (tests
# replace these to inject toy models or faults)

def _create_model(name: str, *, input_size: tuple[int, int, int], num_classes: int) -> nn.Module:
    from stnkit.models import create_model

    return create_model(name, input_size=input_size, num_classes=num_classes)


def _param_groups(model: nn.Module, *, lr: float, localization_lr_mult: float) -> list[dict]:
    from stnkit.nn import param_groups

    return param_groups(model, lr=lr, localization_lr_mult=localization_lr_mult)


def _inspect(model: nn.Module, x: Tensor) -> list[dict]:
    from stnkit.nn import inspect_transformers

    return inspect_transformers(model, x)


def _loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


# ---------------------------------------------------------------------------- small helpers

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train: expected config.device 'cpu' or 'auto' on this machine (CUDA is "
                         "not available), got 'cuda'")
    return torch.device(name)


@contextlib.contextmanager
def _torch_settings(cfg: TrainConfig, device: torch.device):
    """Threads and deterministic algorithms for the run; restored afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    want = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    if want and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        torch.use_deterministic_algorithms(want)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


@contextlib.contextmanager
def _catch_stop_signals(flag: dict):
    """SIGINT/SIGTERM set ``flag['signal']``; a second one acts as usual (kills)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name
        signal.signal(signum, previous[signum])

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _run_lock(run_dir: Path, enabled: bool):
    """An exclusive lock on the run directory, so two processes never train into it."""
    if not enabled:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    f = open(run_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"{run_dir}: another process is training in this run directory") from None
        yield
    finally:
        f.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate factor for the iteration that follows ``step`` completed iterations."""
    return cfg.lr_gamma ** (step // cfg.lr_step) if cfg.lr_step > 0 else 1.0


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = _param_groups(model, lr=cfg.lr, localization_lr_mult=cfg.localization_lr_mult)
    for g in groups:
        g.setdefault("lr", cfg.lr)
        g["base_lr"] = float(g["lr"])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _set_lr(opt: torch.optim.Optimizer, factor: float) -> float:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
    return opt.param_groups[0]["lr"]


def _append_jsonl(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, allow_nan=False) + "\n")
        f.flush()


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the lines of steps <= ``step`` (a resumed run rewrites the steps after it)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(obj, dict) and isinstance(obj.get("step"), int) and obj["step"] <= step:
            keep.append(line)
    ckpt.atomic_write_bytes(path, "".join(s + "\n" for s in keep).encode())
    snaps = run_dir / SNAPSHOTS
    if snaps.is_dir():
        for p in snaps.glob("step_*.safetensors"):
            try:
                if int(p.stem.split("_")[1]) > step:
                    p.unlink()
            except ValueError:
                pass


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_split(model: nn.Module, data: Split, device: torch.device, dist: Dist, *,
                   batch_size: int = 500) -> tuple[float, float, int]:
    """(mean loss, error %, count) on ``data``; under torchrun each rank takes a slice."""
    was_training = model.training
    model.eval()
    n = len(data)
    lo, hi = n * dist.rank // dist.world_size, n * (dist.rank + 1) // dist.world_size
    totals = torch.zeros(3, dtype=torch.float64)
    for s in range(lo, hi, batch_size):
        idx = torch.arange(s, min(s + batch_size, hi))
        x, y = data.batch(idx, device)
        logits = model(x)
        totals += torch.tensor([float(F.cross_entropy(logits, y, reduction="sum")),
                                float((logits.argmax(1) != y).sum()), float(len(idx))],
                               dtype=torch.float64)
    totals = dist.all_sum(totals)
    model.train(was_training)
    count = int(totals[2])
    if count == 0:
        return float("nan"), float("nan"), 0
    return float(totals[0] / count), float(100.0 * totals[1] / count), count


@torch.no_grad()
def _write_snapshot(run_dir: Path, model: nn.Module, inputs: Tensor, step: int) -> None:
    was_training = model.training
    model.eval()
    try:
        found = _inspect(model, inputs)
    finally:
        model.train(was_training)
    if not found:
        return
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    meta = {"step": str(step), "count": str(len(found))}
    for i, t in enumerate(found):
        tensors[f"output_{i}"] = t["output"].detach().float().cpu().contiguous()
        tensors[f"theta_{i}"] = t["theta"].detach().float().cpu().contiguous()
        meta[f"transform_{i}"] = str(getattr(t["module"], "transform", ""))
        meta[f"name_{i}"] = str(t.get("name", ""))
    ckpt.atomic_write_bytes(run_dir / SNAPSHOTS / f"step_{step:08d}.safetensors",
                            save(tensors, metadata=meta))


# ---------------------------------------------------------------------------- the run

class _Run:
    """One training session (fresh or resumed) of one run directory."""

    def __init__(self, cfg: TrainConfig, *, progress: bool, resume_from: ckpt.LoadedCheckpoint | None):
        self.cfg = cfg
        self.progress = progress
        self.loaded = resume_from
        self.run_dir = Path(cfg.out)
        self.created: Path | None = None  # the top directory this session created
        self.written: list[Path] = []  # files this session created in a directory it found
        self.last_ckpt_step: int | None = None
        self.last_metrics: dict[str, Any] = {}
        self.elapsed0 = float(resume_from.record.get("elapsed", 0.0)) if resume_from else 0.0

    # -- setup --------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        """Create the run directory (rank 0); remember what to remove should setup fail."""
        run = self.run_dir
        if run.exists() and not run.is_dir():
            raise RunDirError(f"{run}: exists and is not a directory")
        if run.is_dir() and any((run / n).exists() for n in ("config.json", ckpt.RECORD)):
            raise RunDirError(f"{run}: already holds a run; continue it with `stnkit train "
                              f"--resume {run}` or choose another --out")
        top = run
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        existed = run.exists()
        try:
            run.mkdir(parents=True, exist_ok=True)
            (run / SNAPSHOTS).mkdir(exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create run directory {run}: {e.strerror or e}") from None
        if not existed:
            self.created = top
        probe = run / f".write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self._cleanup()
            raise OSError(f"run directory {run} is not writable: {e.strerror or e}") from None

    def _cleanup(self) -> None:
        """Remove what a failed fresh start wrote, so nothing half-written is left."""
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            self.created = None
            return
        for p in reversed(self.written):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        self.written = []

    def _write_new(self, path: Path, data: bytes) -> None:
        if not path.exists():
            self.written.append(path)
        ckpt.atomic_write_bytes(path, data)

    # -- main ---------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        device = resolve_device(cfg.device)
        dist = setup(device)
        self.dist = dist
        device = dist.device if dist.enabled else device
        self.device = device
        finished = False
        try:
            with _torch_settings(cfg, device):
                result = self._execute(dist, device)
            finished = True
            return result
        finally:
            self.net = None  # DDP holds the process group: release it before leaving
            dist.teardown(finished=finished)

    def _execute(self, dist: Dist, device: torch.device) -> dict[str, Any]:
        cfg = self.cfg
        fresh = self.loaded is None
        if cfg.batch_size % dist.world_size:
            raise ValueError(f"train: expected config.batch_size divisible by the number of "
                             f"processes ({dist.world_size}), got {cfg.batch_size}")
        # Everything that can fail on bad input fails here, before anything is written.
        err: BaseException | None = None
        try:
            if fresh and dist.is_main:
                if self.run_dir.is_dir() and any((self.run_dir / n).exists()
                                                 for n in ("config.json", ckpt.RECORD)):
                    raise RunDirError(f"{self.run_dir}: already holds a run; continue it with "
                                      f"`stnkit train --resume {self.run_dir}` or choose another --out")
            # rank 0 first: the dataset may generate and cache its files
            if dist.is_main:
                self._load_data()
        except BaseException as e:
            err = e
        dist.raise_unless_all_ok(err, "train: another process failed during setup")
        err = None
        try:
            if not dist.is_main:
                self._load_data()
            model = self._build(device)
        except BaseException as e:
            err = e
        dist.raise_unless_all_ok(err, "train: another process failed during setup")

        self.model = model
        self.net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.opt = _make_optimizer(cfg, model)
        start = 0
        if not fresh:
            start = self._restore()
        order = BatchOrder(len(self.train_data), cfg.batch_size, cfg.seed)

        err = None
        lock = contextlib.ExitStack()
        if dist.is_main:
            try:
                if fresh:
                    self._prepare_dir()
                    if not (self.run_dir / ".lock").exists():
                        self.written.append(self.run_dir / ".lock")
                lock.enter_context(_run_lock(self.run_dir, True))
                if fresh:
                    self._write_new(self.run_dir / "config.json",
                                    (json.dumps(to_dict(cfg), indent=2) + "\n").encode())
                    self._write_new(self.run_dir / "metrics.jsonl", b"")
                    self._write_inputs()
                else:
                    ckpt.atomic_write_json(self.run_dir / "config.json", to_dict(cfg))
                    _truncate_metrics(self.run_dir, start)
            except BaseException as e:
                lock.close()
                if fresh:
                    self._cleanup()
                err = e
        dist.raise_unless_all_ok(err, "train: rank 0 failed to write the run directory")
        if fresh:  # the step-0 checkpoint: a fresh run is resumable from its first moment
            try:
                self._checkpoint(0, finished=False)
                if dist.is_main:  # the untrained transformer: the first frame of the evolution
                    _write_snapshot(self.run_dir, self.model, self._snapshot_inputs(), 0)
            except BaseException:
                lock.close()
                self._cleanup()
                raise
        self.created = None
        self.written = []
        with lock:
            return self._loop(start, order)

    def _load_data(self) -> None:
        cfg = self.cfg
        show = self.progress and self.dist.is_main
        self.train_data = load_split(cfg.data, "train", seed=cfg.data_seed, data_dir=cfg.data_dir,
                                     limit=cfg.train_size, progress=show)
        self.test_data = load_split(cfg.data, "test", seed=cfg.data_seed, data_dir=cfg.data_dir,
                                    limit=cfg.test_size, progress=show)

    def _build(self, device: torch.device) -> nn.Module:
        cfg = self.cfg
        _seed_everything(cfg.seed)
        model = _create_model(cfg.model, input_size=self.train_data.image_size,
                              num_classes=self.train_data.num_classes)
        # per-rank streams after the (identical) initialisation; rank 0 = single process
        _seed_everything(cfg.seed + 7919 * (self.dist.rank + 1))
        return model.to(device)

    def _restore(self) -> int:
        loaded = self.loaded
        rec = loaded.record
        ckpt.load_weights_into(self.model, loaded.weights, model_name=self.cfg.model,
                               path=str(self.run_dir / ckpt.WEIGHTS))
        ckpt.restore_optimizer_state(self.opt, rec["optimizer"], loaded.state)
        world = int(rec.get("world_size", 1))
        if world != self.dist.world_size:
            raise ckpt.CheckpointError(
                f"{self.run_dir}: the checkpoint was written by {world} process(es); resume it "
                f"with the same number (got {self.dist.world_size}) to continue exactly")
        ckpt.restore_rng_state(rec["rng"], loaded.state, rank=self.dist.rank)
        self.last_ckpt_step = int(rec["step"])
        self.last_metrics = dict(rec.get("metrics") or {})
        return int(rec["step"])

    def _write_inputs(self) -> None:
        from safetensors.torch import save

        n = min(self.cfg.snapshot_count, len(self.test_data))
        images, labels = self.test_data.first(n)
        self._write_new(self.run_dir / SNAPSHOTS / "inputs.safetensors",
                        save({"images": images.contiguous(), "labels": labels.contiguous()}))

    def _snapshot_inputs(self) -> Tensor:
        return self.test_data.first(self.cfg.snapshot_count)[0].to(self.device)

    def _checkpoint(self, step: int, *, finished: bool) -> None:
        """All ranks call this (RNG states are gathered); rank 0 writes."""
        # every rank holds the same weights, so every rank reaches the same verdict
        for name, p in self.model.state_dict().items():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise TrainingDiverged(
                    f"training diverged at step {step}: weight {name!r} is not finite; "
                    f"{self._kept()}", step=step, checkpoint_step=self.last_ckpt_step)
        rank_states = self.dist.gather(torch.get_rng_state())
        err: BaseException | None = None
        if self.dist.is_main:
            try:
                self._write_checkpoint(step, finished, rank_states)
            except BaseException as e:
                err = e
        self.dist.raise_unless_all_ok(
            err, f"train: rank 0 failed to write the checkpoint of step {step}")
        self.last_ckpt_step = step

    def _write_checkpoint(self, step: int, finished: bool, rank_states: list[Tensor]) -> None:
        cfg = self.cfg
        opt_json, opt_tensors = ckpt.optimizer_state(self.opt)
        rng_json, rng_tensors = ckpt.rng_state(rank_states)
        record = {
            "step": step,
            "model": cfg.model,
            "data": cfg.data,
            "input_size": list(self.train_data.image_size),
            "num_classes": self.train_data.num_classes,
            "finished": finished,
            "config": to_dict(cfg),
            "optimizer": opt_json,
            "scheduler": {"type": "step", "lr_step": cfg.lr_step, "lr_gamma": cfg.lr_gamma,
                          "factor": _lr_factor(cfg, step)},
            "rng": rng_json,
            "sampler": {"type": "epoch-permutation", "seed": cfg.seed,
                        "num_samples": len(self.train_data), "position": step * cfg.batch_size},
            "world_size": self.dist.world_size,
            "elapsed": self._elapsed(),
            "metrics": self.last_metrics,
            "torch_version": torch.__version__,
            "num_threads": torch.get_num_threads(),
        }
        from stnkit import __version__

        record["stnkit_version"] = __version__
        ckpt.save_checkpoint(self.run_dir, weights=self.model.state_dict(),
                             state_tensors={**opt_tensors, **rng_tensors}, record=record)

    def _kept(self) -> str:
        if self.last_ckpt_step is None:
            return "no checkpoint was written"
        return (f"the last good checkpoint (step {self.last_ckpt_step}) is kept in {self.run_dir}; "
                "lower the learning rate and start a new run")

    def _elapsed(self) -> float:
        return self.elapsed0 + (time.perf_counter() - self.t0 if hasattr(self, "t0") else 0.0)

    def _evaluate(self, step: int) -> dict[str, Any]:
        loss, err, _ = evaluate_split(self.model, self.test_data, self.device, self.dist)
        line = {"step": step, "split": "test", "loss": _round(loss), "error": _round(err),
                "lr": _round(self.opt.param_groups[0]["lr"]), "time": round(self._elapsed(), 3)}
        if self.dist.is_main:
            _append_jsonl(self.run_dir / "metrics.jsonl", line)
            _write_snapshot(self.run_dir, self.model, self._snapshot_inputs(), step)
        self.last_metrics["test"] = line
        return line

    def _loop(self, start: int, order: BatchOrder) -> dict[str, Any]:
        cfg, dist, device = self.cfg, self.dist, self.device
        self.t0 = time.perf_counter()
        if start >= cfg.iterations:
            return self._result(start)
        bar = None
        if self.progress and dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=start, unit="it", dynamic_ncols=True,
                       desc=f"{cfg.model}/{cfg.data}", leave=True)
        window = torch.zeros(3, dtype=torch.float64)  # loss sum, errors, samples since last log
        busy = 0.0  # seconds spent in training steps since the last log (not eval, not I/O)
        flag: dict[str, Any] = {}
        step = start
        net = self.net
        net.train()
        try:
            with _catch_stop_signals(flag):
                while step < cfg.iterations:
                    t_step = time.perf_counter()
                    lr = _set_lr(self.opt, _lr_factor(cfg, step))
                    idx = order.indices(step, rank=dist.rank, world_size=dist.world_size)
                    x, y = self.train_data.batch(idx, device)
                    logits = net(x)
                    loss = _loss(logits, y)
                    with torch.no_grad():
                        loss_value = float(loss)
                        finite = math.isfinite(loss_value)
                        wrong = float((logits.argmax(1) != y).sum())
                    # loss sum, errors, samples, non-finite, stop requested: summed over ranks
                    stats = dist.all_sum(torch.tensor(
                        [loss_value * len(idx) if finite else 0.0, wrong, float(len(idx)),
                         0.0 if finite else 1.0, 1.0 if flag else 0.0], dtype=torch.float64))
                    if stats[3] > 0:
                        what = loss_value if not finite else "not finite on another process"
                        raise TrainingDiverged(
                            f"training diverged at step {step + 1}: the loss is {what}; "
                            f"{self._kept()}", step=step + 1, checkpoint_step=self.last_ckpt_step)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    busy += time.perf_counter() - t_step
                    step += 1
                    window += stats[:3]
                    if bar is not None:
                        bar.update(1)
                    last = step == cfg.iterations
                    if step % cfg.log_every == 0 or last:
                        line = {"step": step, "split": "train",
                                "loss": _round(float(window[0] / window[2])),
                                "error": _round(float(100 * window[1] / window[2])),
                                "lr": _round(lr),
                                "images_per_s": round(float(window[2]) / max(busy, 1e-9), 1),
                                "time": round(self._elapsed(), 3)}
                        if dist.is_main:
                            _append_jsonl(self.run_dir / "metrics.jsonl", line)
                        self.last_metrics["train"] = line
                        if bar is not None:
                            bar.set_postfix(loss=f"{line['loss']:.4f}", acc=f"{100 - line['error']:.2f}%",
                                            lr=f"{lr:.3g}", img_s=f"{line['images_per_s']:.0f}",
                                            refresh=False)
                        window.zero_()
                        busy = 0.0
                    if step % cfg.eval_every == 0 or last:
                        self._evaluate(step)
                    stop = stats[4] > 0
                    if step % cfg.checkpoint_every == 0 or last or stop:
                        self._checkpoint(step, finished=last)
                    if stop and not last:
                        raise TrainingInterrupted(
                            f"interrupted at step {step} of {cfg.iterations}; checkpoint saved; "
                            f"continue with `stnkit train --resume {self.run_dir}`",
                            step=step, run_dir=str(self.run_dir))
        finally:
            if bar is not None:
                bar.close()
        return self._result(step)

    def _result(self, step: int) -> dict[str, Any]:
        train = self.last_metrics.get("train", {})
        test = self.last_metrics.get("test", {})
        return {"run_dir": str(self.run_dir), "step": step, "model": self.cfg.model,
                "data": self.cfg.data, "train_loss": train.get("loss"),
                "train_error": train.get("error"), "test_loss": test.get("loss"),
                "test_error": test.get("error"), "time": round(self._elapsed(), 3)}


# ---------------------------------------------------------------------------- public API

def train(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train a model from scratch into ``config.out``; returns the final metrics.

    Returns ``{"run_dir", "step", "model", "data", "train_loss", "train_error",
    "test_loss", "test_error", "time"}`` (errors in percent). Raises
    :class:`TrainingDiverged` on a NaN/Inf loss, :class:`TrainingInterrupted` on Ctrl-C
    (after writing a checkpoint), :class:`RunDirError` if ``config.out`` already holds a run.
    """
    cfg = check_config(config)
    if cfg.dry_run:
        cfg = apply_dry_run(cfg)
    return _Run(cfg, progress=progress, resume_from=None).execute()


def load_run_config(run_dir: str | os.PathLike, *, fn: str) -> TrainConfig:
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{fn}: run directory {str(run)!r} does not exist")
    if not (run / ckpt.RECORD).exists() and not (run / "config.json").exists():
        raise RunDirError(f"{fn}: {str(run)!r} is not a run directory (no {ckpt.RECORD})")
    record = ckpt.read_record(run)
    return from_dict(record["config"], source=str(run / ckpt.RECORD))


def resume(run_dir: str | os.PathLike, *, iterations: int | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly.

    ``iterations`` extends (or sets) the total number of iterations; a finished run with no
    more iterations to do returns its final metrics at once.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"resume: run directory {str(run)!r} does not exist")
    if not (run / ckpt.RECORD).exists() and not (run / (ckpt.RECORD + ".tmp")).exists():
        raise RunDirError(f"resume: {str(run)!r} is not a run directory (no {ckpt.RECORD})")
    if launch_rank() == 0:
        ckpt.recover(run)
    else:  # let rank 0 finish a roll-forward first
        deadline = time.monotonic() + 60
        while (run / (ckpt.RECORD + ".tmp")).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    loaded = ckpt.read_checkpoint(run)
    cfg = from_dict(loaded.record["config"], source=str(run / ckpt.RECORD))
    cfg = dataclasses.replace(cfg, out=str(run))
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
            raise ValueError(f"resume: expected iterations a positive int, got {iterations!r}")
        if iterations < int(loaded.record["step"]):
            raise ValueError(f"resume: expected iterations >= the checkpoint's step "
                             f"({loaded.record['step']}), got {iterations}")
        cfg = dataclasses.replace(cfg, iterations=iterations)
    check_config(cfg, fn="resume")
    if cfg.model != loaded.record["model"]:
        raise ckpt.CheckpointError(f"{run / ckpt.RECORD}: model {loaded.record['model']!r} does not "
                                   f"match the config's {cfg.model!r}")
    return _Run(cfg, progress=progress, resume_from=loaded).execute()
