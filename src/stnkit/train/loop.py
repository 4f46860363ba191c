"""The training loop: ``train(config)`` and ``resume(run_dir)``.

A run directory, written by rank 0 only::

    RUN_DIR/
      config.json                  the resolved TrainConfig
      metrics.jsonl                {"step", "split": "train"|"test"|"validation", "loss",
                                    "error" (%), "lr",
                                    "images_per_s" (train lines), "time" (s)} a line; a
                                    value that is not finite (a test loss that overflows)
                                    is written as null (JSON has no NaN/Inf)
      checkpoint.safetensors       model weights        } see stnkit.train.checkpoint
      checkpoint.state.safetensors optimizer + RNG      }
      checkpoint.json              step, config, optimizer, scheduler, rng, grad_scaler
                                   (fp16), memory_format, metrics, ...
      snapshots/inputs.safetensors the first N test (or validation) samples ("images", "labels")
      snapshots/step_XXXXXXXX.safetensors  at step 0 and every evaluation, per transformer i:
                                   "output_i", "theta_i"; metadata step, count, transform_i
      eval.json                    written by evaluate() / `stnkit eval`

The loop is iteration based;
each iteration reads the batch :class:`~stnkit.train._data.BatchOrder` assigns to it, so a
run killed at any point and resumed from its last checkpoint retraces the same steps and
ends, on CPU, with bitwise the same weights as a run never interrupted, in every
``config.precision`` (fp32, bf16, fp16: see :mod:`stnkit.train.precision`; the fp16
GradScaler's state is part of the checkpoint).

``config.json`` is derived from the checkpoint's config and must agree with it: ``resume`` and
``evaluate`` refuse a run whose ``config.json`` is not JSON, has unknown keys or differs from
``checkpoint.json``'s config in any setting but ``out`` (the directory may have moved) and,
when ``resume(iterations=N)`` sets it anew, ``iterations``; a missing one is rewritten.

Crashes: a run killed (``kill -9``) before its step-0 checkpoint was complete has a
``config.json`` but no ``checkpoint.json``; ``resume`` starts it again from step 0 (the same
run: the initialisation and the data order depend on the config alone). A run killed before
even its ``config.json`` was written holds nothing to resume; ``stnkit train`` with the same
``--out`` starts it afresh. Either way, the temporary files a killed write leaves
(``.<name>.<8 hex digits>.tmp`` of the run's own files, ``checkpoint*.tmp``) are removed,
under the run lock, before anything else happens.

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

from stnkit._checks import StnkitError, StnkitFileError, fail, fail_file
from stnkit._io import remove_stale_temps
from stnkit.train import checkpoint as ckpt
from stnkit.train._data import BatchOrder, Split, load_split, load_training
from stnkit.train.config import TrainConfig, apply_dry_run, check_config, from_dict, to_dict
from stnkit.train.distributed import Dist, launch_rank, setup
from stnkit.train.precision import (autocast, channels_last, make_scaler, scaler_state,
                                    to_memory_format)

__all__ = ["RunDirError", "TrainingDiverged", "TrainingInterrupted", "resume", "train"]

SNAPSHOTS = "snapshots"


class TrainingDiverged(StnkitError, RuntimeError):
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


class RunDirError(StnkitFileError, ValueError):
    """A run directory that is missing, already used, or not a run (a
    :class:`~stnkit._checks.StnkitFileError`; also a ``ValueError``, as it was before)."""


def _bad_dir(fn: str, path: Any, problem: str):
    fail_file(fn, path, problem, error=RunDirError)


# The run directory's own files that atomic writes replace (their temporaries are ours to
# remove after a kill); regular expressions of the names, see stnkit._io.remove_stale_temps.
_RUN_FILES = r"config\.json|metrics\.jsonl|eval\.json"
_SNAPSHOT_FILES = r"inputs\.safetensors|step_\d{8}\.safetensors"


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
        fail("train", "config.device", "'cpu' or 'auto' on this machine (CUDA is not "
             "available)", "'cuda'")
    return torch.device(name)


CUBLAS_WORKSPACE = ":4096:8"
"""``CUBLAS_WORKSPACE_CONFIG`` for deterministic CUDA runs (NVIDIA's documented value for
reproducible cuBLAS results; torch refuses cuBLAS calls under deterministic algorithms
without it or ``:16:8``)."""


@contextlib.contextmanager
def _torch_settings(cfg: TrainConfig, device: torch.device):
    """Threads, deterministic algorithms and, for a deterministic CUDA run only,
    ``CUBLAS_WORKSPACE_CONFIG``, for the duration of the run; all restored afterwards.

    The environment variable is set only when the user has not set it (theirs wins) and
    removed (or put back) on exit, so it never leaks into code that runs after ``train()``.
    cuBLAS reads it when it creates a handle, and torch checks it at each cuBLAS call under
    deterministic algorithms: both happen inside the run.
    """
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    want = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    env_key = "CUBLAS_WORKSPACE_CONFIG"
    env_before = os.environ.get(env_key)
    if want and device.type == "cuda" and env_before is None:
        os.environ[env_key] = CUBLAS_WORKSPACE
    try:
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        torch.use_deterministic_algorithms(want)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        if env_before is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = env_before


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
            _bad_dir("train", run_dir, "another process is training in this run directory")
        yield
    finally:
        f.close()


def _seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (``seed`` >= 0; torch takes 64 bits, NumPy 32)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**64)  # the identity for every config.seed (< 2**63) + offsets


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate factor for the iteration that follows ``step`` completed iterations:
    a linear warm-up over ``cfg.warmup`` iterations, then ``"step"`` (x ``lr_gamma`` every
    ``lr_step``) or ``"cosine"`` (half a cosine from 1 to 0 between the end of the warm-up
    and ``cfg.iterations``; a run resumed with more iterations stretches what remains)."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.iterations - cfg.warmup)
        t = min(1.0, max(0, step - cfg.warmup) / span)
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    return warm * (cfg.lr_gamma ** (step // cfg.lr_step) if cfg.lr_step > 0 else 1.0)


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


def _round(x: float) -> float | None:
    """6 significant digits; None (JSON null) for NaN/Inf, which JSON cannot hold."""
    return float(f"{x:.6g}") if math.isfinite(x) else None


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


# ---------------------------------------------------------------------------- one step

def forward_loss(net: nn.Module, x: Tensor, y: Tensor, *, precision: str,
                 channels_last: bool) -> tuple[Tensor, Tensor]:
    """(logits, loss) of one training batch, as the loop computes them.

    The forward pass runs under autocast in ``precision`` (none for fp32) on ``x`` in the
    run's memory format; the loss takes float32 logits (``.float()`` is the identity in fp32).
    ``benchmarks/train_step.py`` times this and :func:`optimizer_step`.
    """
    with autocast(precision, x.device):
        logits = net(to_memory_format(x, channels_last))
    return logits, _loss(logits.float(), y)


def optimizer_step(opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   loss: Tensor) -> None:
    """Backward and update: in fp16 the loss is scaled, the step skipped on Inf/NaN
    gradients and the scale adapted; otherwise the scaler is disabled and passes through."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate_split(model: nn.Module, data: Split, device: torch.device, dist: Dist, *,
                   batch_size: int = 500, precision: str = "fp32") -> tuple[float, float, int]:
    """(mean loss, error %, count) on ``data``; under torchrun each rank takes a slice.

    ``precision``: the run's (see :mod:`stnkit.train.precision`); the loss is computed from
    float32 logits in every precision."""
    was_training = model.training
    nhwc = channels_last(precision, model)
    model.eval()
    n = len(data)
    lo, hi = n * dist.rank // dist.world_size, n * (dist.rank + 1) // dist.world_size
    totals = torch.zeros(3, dtype=torch.float64)
    for s in range(lo, hi, batch_size):
        idx = torch.arange(s, min(s + batch_size, hi))
        x, y = data.batch(idx, device)
        with autocast(precision, device):
            logits = model(to_memory_format(x, nhwc)).float()
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
def _write_snapshot(run_dir: Path, model: nn.Module, inputs: Tensor, step: int, *,
                    precision: str = "fp32") -> None:
    was_training = model.training
    model.eval()
    try:
        with autocast(precision, inputs.device):
            found = _inspect(model, to_memory_format(inputs, channels_last(precision, model)))
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

    def __init__(self, cfg: TrainConfig, *, progress: bool,
                 resume_from: ckpt.LoadedCheckpoint | None, restart: bool = False):
        self.cfg = cfg
        self.restart = restart  # a fresh start in a directory whose step-0 checkpoint a kill cut
        self.progress = progress
        self.loaded = resume_from
        self.run_dir = Path(cfg.out)
        self.created: Path | None = None  # the top directory this session created
        self.written: list[Path] = []  # files this session created in a directory it found
        self.last_ckpt_step: int | None = None
        self.last_metrics: dict[str, Any] = {}
        self.elapsed0 = float(resume_from.record.get("elapsed", 0.0)) if resume_from else 0.0
        self.cpu0 = float(resume_from.record.get("cpu_seconds", 0.0)) if resume_from else 0.0

    # -- setup --------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        """Create the run directory (rank 0); remember what to remove should setup fail."""
        run = self.run_dir
        if run.exists() and not run.is_dir():
            _bad_dir("train", run, "exists and is not a directory")
        self._refuse_used_dir()
        top = run
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        existed = run.exists()
        try:
            run.mkdir(parents=True, exist_ok=True)
            (run / SNAPSHOTS).mkdir(exist_ok=True)
        except OSError as e:
            fail_file("train", run, f"cannot create run directory ({e.strerror or e})")
        if not existed:
            self.created = top
        probe = run / f".write-test-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            self._cleanup()
            fail_file("train", run, f"run directory is not writable ({e.strerror or e})")

    def _refuse_used_dir(self) -> None:
        run = self.run_dir
        if not self.restart and run.is_dir() and any((run / n).exists()
                                                     for n in ("config.json", ckpt.RECORD)):
            _bad_dir("train", run, f"already holds a run; continue it with `stnkit train "
                     f"--resume {run}` or choose another --out")

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
            fail("train", "config.batch_size", f"divisible by the number of processes "
                 f"({dist.world_size})", cfg.batch_size)
        # Everything that can fail on bad input fails here, before anything is written.
        err: BaseException | None = None
        try:
            if fresh and dist.is_main:
                self._refuse_used_dir()
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
        self.scaler = make_scaler(cfg.precision, device)
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
                _remove_stale_temps(self.run_dir)
                if fresh:
                    self._write_new(self.run_dir / "config.json",
                                    (json.dumps(to_dict(cfg), indent=2) + "\n").encode())
                    self._write_new(self.run_dir / "metrics.jsonl", b"")
                    self._write_inputs()
                    if self.restart:  # nothing of the cut attempt may outlive it
                        _truncate_metrics(self.run_dir, -1)
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
                    _write_snapshot(self.run_dir, self.model, self._snapshot_inputs(), 0,
                                    precision=cfg.precision)
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
        self.train_data, val = load_training(
            cfg.data, seed=cfg.data_seed, data_dir=cfg.data_dir, limit=cfg.train_size,
            validation=cfg.validation_size, fresh=cfg.fresh_distortions, progress=show)
        # with a validation split the run never looks at the test set (tuning)
        self.eval_split = "test" if val is None else "validation"
        self.eval_data = val if val is not None else load_split(
            cfg.data, "test", seed=cfg.data_seed, data_dir=cfg.data_dir, limit=cfg.test_size,
            progress=show)

    def _build(self, device: torch.device) -> nn.Module:
        cfg = self.cfg
        _seed_everything(cfg.seed)
        model = _create_model(cfg.model, input_size=self.train_data.image_size,
                              num_classes=self.train_data.num_classes)
        # per-rank streams after the (identical) initialisation; rank 0 = single process
        _seed_everything(cfg.seed + 7919 * (self.dist.rank + 1))
        self.channels_last = channels_last(cfg.precision, model)
        if self.channels_last:  # the weights' layout; values (and checkpoints) are unchanged
            model = model.to(memory_format=torch.channels_last)
        return model.to(device)

    def _restore(self) -> int:
        loaded = self.loaded
        rec = loaded.record
        ckpt.load_weights_into(self.model, loaded.weights, model_name=self.cfg.model,
                               path=str(self.run_dir / ckpt.WEIGHTS))
        ckpt.restore_optimizer_state(self.opt, rec["optimizer"], loaded.state)
        world = int(rec.get("world_size", 1))
        if world != self.dist.world_size:
            fail_file("resume", self.run_dir, f"the checkpoint was written by {world} "
                      f"process(es); resume it with the same number (got "
                      f"{self.dist.world_size}) to continue exactly", error=ckpt.CheckpointError)
        ckpt.restore_rng_state(rec["rng"], loaded.state, rank=self.dist.rank)
        ckpt.restore_scaler_state(self.scaler, rec.get("grad_scaler"))
        self.last_ckpt_step = int(rec["step"])
        self.last_metrics = dict(rec.get("metrics") or {})
        return int(rec["step"])

    def _write_inputs(self) -> None:
        from safetensors.torch import save

        n = min(self.cfg.snapshot_count, len(self.eval_data))
        images, labels = self.eval_data.first(n)
        self._write_new(self.run_dir / SNAPSHOTS / "inputs.safetensors",
                        save({"images": images.contiguous(), "labels": labels.contiguous()}))

    def _snapshot_inputs(self) -> Tensor:
        return self.eval_data.first(self.cfg.snapshot_count)[0].to(self.device)

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
            "scheduler": {"type": cfg.lr_schedule, "warmup": cfg.warmup, "lr_step": cfg.lr_step,
                          "lr_gamma": cfg.lr_gamma, "factor": _lr_factor(cfg, step)},
            "rng": rng_json,
            "grad_scaler": scaler_state(self.scaler),
            "memory_format": "channels_last" if self.channels_last else "contiguous",
            "sampler": {"type": "epoch-permutation", "seed": cfg.seed,
                        "num_samples": len(self.train_data), "position": step * cfg.batch_size},
            "world_size": self.dist.world_size,
            "elapsed": self._elapsed(),
            "cpu_seconds": round(self._cpu_seconds(), 3),
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

    def _cpu_seconds(self) -> float:
        """CPU time of this process (all its threads) spent in the loop, summed over resumes:
        the cost of a run whatever else shares the machine."""
        return self.cpu0 + (time.process_time() - self.c0 if hasattr(self, "c0") else 0.0)

    def _evaluate(self, step: int) -> dict[str, Any]:
        loss, err, _ = evaluate_split(self.model, self.eval_data, self.device, self.dist,
                                      precision=self.cfg.precision)
        line = {"step": step, "split": self.eval_split, "loss": _round(loss), "error": _round(err),
                "lr": _round(self.opt.param_groups[0]["lr"]), "time": round(self._elapsed(), 3)}
        if self.dist.is_main:
            _append_jsonl(self.run_dir / "metrics.jsonl", line)
            _write_snapshot(self.run_dir, self.model, self._snapshot_inputs(), step,
                            precision=self.cfg.precision)
        self.last_metrics[self.eval_split] = line
        return line

    def _loop(self, start: int, order: BatchOrder) -> dict[str, Any]:
        cfg, dist, device = self.cfg, self.dist, self.device
        self.t0, self.c0 = time.perf_counter(), time.process_time()
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
        net, scaler, nhwc = self.net, self.scaler, self.channels_last
        net.train()
        try:
            with _catch_stop_signals(flag):
                while step < cfg.iterations:
                    t_step = time.perf_counter()
                    lr = _set_lr(self.opt, _lr_factor(cfg, step))
                    idx, epochs = order.draw(step, rank=dist.rank, world_size=dist.world_size)
                    x, y = self.train_data.batch(idx, device, epochs)
                    logits, loss = forward_loss(net, x, y, precision=cfg.precision,
                                                channels_last=nhwc)
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
                    optimizer_step(self.opt, scaler, loss)
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
                        if bar is not None and None not in (line["loss"], line["error"]):
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
        out = {"run_dir": str(self.run_dir), "step": step, "model": self.cfg.model,
               "data": self.cfg.data, "train_loss": train.get("loss"),
               "train_error": train.get("error"), "test_loss": test.get("loss"),
               "test_error": test.get("error"), "time": round(self._elapsed(), 3)}
        if "validation" in self.last_metrics:
            val = self.last_metrics["validation"]
            out.update(validation_loss=val.get("loss"), validation_error=val.get("error"))
        return out


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


def _remove_stale_temps(run: Path) -> list[Path]:
    """Remove what writes killed mid-way left in ``run`` (call it under the run lock)."""
    removed = remove_stale_temps(run, _RUN_FILES)
    if (run / SNAPSHOTS).is_dir():
        removed += remove_stale_temps(run / SNAPSHOTS, _SNAPSHOT_FILES)
    return removed


def _check_config_json(run: Path, record_cfg: TrainConfig, *, fn: str,
                       exempt: tuple[str, ...] = ("out",)) -> bool:
    """``RUN/config.json`` must be the checkpoint's config (but for ``exempt`` keys); returns
    whether it exists (a missing one is rewritten by resume)."""
    path = run / "config.json"
    restore = (f"restore it, or delete it (`stnkit train --resume {run}` rewrites it from "
               f"{ckpt.RECORD})")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as e:
        fail_file(fn, path, f"cannot read it ({e.strerror or e})")
    try:
        saved = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        fail_file(fn, path, f"not valid JSON ({e}); it must hold the run's settings: {restore}")
    if not isinstance(saved, dict):
        fail_file(fn, path, f"expected a JSON object of settings, got {type(saved).__name__}: "
                  f"{restore}")
    want = to_dict(record_cfg)
    for key in saved:
        if key not in want:
            fail_file(fn, path, f"unknown key {key!r} (known keys: {', '.join(sorted(want))}): "
                      f"{restore}")
    got_all = to_dict(from_dict(saved, source=str(path)))  # each value read as its field's kind
    for key, expected in want.items():
        got = got_all[key]
        if key in exempt or got == expected:
            continue
        hint = (f"; to train longer use `stnkit train --resume {run} --iterations N`"
                if key == "iterations" else "")
        fail_file(fn, path, f"{key} is {saved.get(key, '(missing)')!r}, but {ckpt.RECORD} says "
                  f"the run was trained with {expected!r}; a run's settings cannot "
                  f"change{hint}: {restore}")
    return True


def load_run_config(run_dir: str | os.PathLike, *, fn: str) -> TrainConfig:
    """The config of the run in ``run_dir``, from its checkpoint record, with
    ``config.json`` checked against it (see the module docstring)."""
    run = Path(run_dir)
    if not run.is_dir():
        _bad_dir(fn, run, "run directory does not exist")
    if not (run / ckpt.RECORD).exists():
        _not_a_run(run, fn)
    record = ckpt.read_record(run, fn=fn)
    cfg = from_dict(record["config"], source=str(run / ckpt.RECORD))
    _check_config_json(run, cfg, fn=fn)
    return cfg


def _not_a_run(run: Path, fn: str):
    if (run / "config.json").exists():
        _bad_dir(fn, run, f"holds no checkpoint yet ({ckpt.RECORD} is missing: the run was "
                 f"stopped before its first checkpoint); `stnkit train --resume {run}` starts "
                 "it again from step 0")
    _bad_dir(fn, run, f"not a run directory (no {ckpt.RECORD} and no config.json); a run "
             "killed before it wrote its configuration has nothing to resume: start it again "
             f"with `stnkit train ... --out {run}`")


def _check_iterations(iterations: Any, step: int) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations <= 0:
        fail("resume", "iterations", "a positive int", repr(iterations),
             error=TypeError if not isinstance(iterations, int) else ValueError)
    if iterations < step:
        fail("resume", "iterations", f">= the checkpoint's step ({step})", iterations)


def resume(run_dir: str | os.PathLike, *, iterations: int | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly.

    ``iterations`` extends (or sets) the total number of iterations; a finished run with no
    more iterations to do returns its final metrics at once. A run killed before its first
    checkpoint was complete starts again from step 0 (see the module docstring).
    """
    run = Path(run_dir)
    if not run.is_dir():
        _bad_dir("resume", run, "run directory does not exist")
    if launch_rank() == 0:
        with _run_lock(run, True):  # never clean up after a process that is still writing
            ckpt.recover(run)
            _remove_stale_temps(run)
    else:  # let rank 0 finish a roll-forward first
        deadline = time.monotonic() + 60
        while (run / (ckpt.RECORD + ".tmp")).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    exempt = ("out",) if iterations is None else ("out", "iterations")
    if not (run / ckpt.RECORD).exists():
        if not (run / "config.json").exists():
            _not_a_run(run, "resume")
        cfg = _read_config_json(run)
        cfg = dataclasses.replace(cfg, out=str(run))
        if iterations is not None:
            _check_iterations(iterations, 0)
            cfg = dataclasses.replace(cfg, iterations=iterations)
        check_config(cfg, fn="resume")
        if cfg.dry_run:
            cfg = apply_dry_run(cfg)
        return _Run(cfg, progress=progress, resume_from=None, restart=True).execute()
    loaded = ckpt.read_checkpoint(run, fn="resume")
    cfg = from_dict(loaded.record["config"], source=str(run / ckpt.RECORD))
    _check_config_json(run, cfg, fn="resume", exempt=exempt)
    cfg = dataclasses.replace(cfg, out=str(run))
    if iterations is not None:
        _check_iterations(iterations, int(loaded.record["step"]))
        cfg = dataclasses.replace(cfg, iterations=iterations)
    check_config(cfg, fn="resume")
    if cfg.model != loaded.record["model"]:
        fail_file("resume", run / ckpt.RECORD, f"model {loaded.record['model']!r} does not match "
                  f"the config's {cfg.model!r}", error=ckpt.CheckpointError)
    return _Run(cfg, progress=progress, resume_from=loaded).execute()


def _read_config_json(run: Path) -> TrainConfig:
    """The config of a run that has no checkpoint yet: its ``config.json``, strictly read."""
    path = run / "config.json"
    try:
        saved = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        fail_file("resume", path, f"not valid JSON ({e}); the run has no checkpoint yet, so "
                  f"there is nothing else to resume from: start it again with `stnkit train "
                  f"... --out {run}` after removing {run}")
    return from_dict(saved, source=str(path))
