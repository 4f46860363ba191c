"""Checkpoints: safetensors for tensors, JSON for everything else; no pickle anywhere.

A checkpoint is three files in the run directory:

- ``checkpoint.safetensors``: the model's weights (``model.state_dict()``), nothing else, so
  ``safetensors.torch.load_file`` + ``load_state_dict`` is all a reader needs;
- ``checkpoint.state.safetensors``: optimizer buffers and RNG states (tensors);
- ``checkpoint.json``: step, model, resolved config, optimizer hyper-parameters and
  non-tensor state, scheduler, RNG states (Python, NumPy; torch ones named in the state
  file), the data-order position, the fp16 GradScaler's state (``"grad_scaler"``: scale,
  growth tracker and factors; null in fp32 / bf16 runs).

Integrity: ``checkpoint.json`` records the size and sha256 of the two tensor files
(``"files"``) and the sha256 of its own content (``"sha256"``: the canonical JSON of the
record without that key). Every load verifies them and refuses a file that does not match
with one line naming it, so a flipped bit is never trained on or evaluated. Records of
format ``stnkit-checkpoint-1`` (stnkit before digests) have neither; they are accepted with
the checks they always had (safetensors structure, the shared token, tensor names and
shapes), and the next checkpoint a resumed run writes carries digests. A record that
carries digests (any format) is always verified; a ``stnkit-checkpoint-2`` record without
them is refused as corrupt. A reader verifies what it reads: ``resume`` all three files,
``evaluate`` / ``load_model`` the record and the weights (not the optimizer state, which they
do not use). Weights that hold NaN or Inf are refused too, whatever wrote them.

Every save writes all three to ``*.tmp`` files (each fsynced, the JSON last), then renames
them over the old ones in a fixed order. The three carry the same random ``token``. A kill
during the renames leaves a complete, fsynced ``checkpoint.json.tmp`` behind:
:func:`recover` finishes the renames (roll forward). A kill before that leaves the old
checkpoint untouched and the partial ``*.tmp`` files are deleted (roll back).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stnkit._checks import StnkitFileError, fail_file
from stnkit._io import atomic_write_bytes, atomic_write_json, fsync_dir, write_fsynced

__all__ = [
    "CheckpointError",
    "FORMAT",
    "LEGACY_FORMAT",
    "LoadedCheckpoint",
    "atomic_write_bytes",
    "atomic_write_json",
    "optimizer_state",
    "read_checkpoint",
    "read_weights",
    "recover",
    "restore_optimizer_state",
    "restore_rng_state",
    "restore_scaler_state",
    "rng_state",
    "save_checkpoint",
]

FORMAT = "stnkit-checkpoint-2"
LEGACY_FORMAT = "stnkit-checkpoint-1"  # no digests (stnkit before 2026-12)
WEIGHTS = "checkpoint.safetensors"
STATE = "checkpoint.state.safetensors"
RECORD = "checkpoint.json"


class CheckpointError(StnkitFileError, ValueError):
    """A checkpoint that is missing, corrupt, torn or belongs to another model.

    A :class:`~stnkit._checks.StnkitFileError` (an ``OSError``); also a ``ValueError``, as it
    was before, for callers that catch that."""


def _bad(fn: str, path: Any, problem: str):
    fail_file(fn, path, problem, error=CheckpointError)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_digest(record: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``record`` without its ``"sha256"`` key."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                              allow_nan=False).encode())


# ---------------------------------------------------------------------------- atomic files

# ---------------------------------------------------------------------------- safetensors

def _to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(flat, metadata=metadata)


def _header(data: bytes, path: Path, fn: str) -> dict[str, Any]:
    """The JSON header of a safetensors blob (8-byte little-endian length, then JSON)."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if n > len(data) - 8:
            raise ValueError("header longer than the file")
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        return header
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        _bad(fn, path, f"corrupt checkpoint file (not safetensors: {e})")


def _read_safetensors(path: Path, record: dict[str, Any], *,
                      fn: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and metadata of ``path``, checked against ``record``: the same token (else
    the checkpoint is torn), then the recorded size and sha256 (else the file is corrupt)."""
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _bad(fn, path, "checkpoint file is missing")
    except OSError as e:
        _bad(fn, path, f"cannot read the checkpoint file ({e.strerror or e})")
    problem = None
    files = record.get("files")
    if files is not None or record.get("format") != LEGACY_FORMAT:
        want = files.get(path.name) if isinstance(files, dict) else None
        if not isinstance(want, dict) or not isinstance(want.get("sha256"), str):
            _bad(fn, path.parent / RECORD, f"corrupt checkpoint record (no sha256 of {path.name})")
        got = _sha256(data)
        if len(data) != want.get("bytes") or got != want["sha256"]:
            problem = (f"corrupt checkpoint file: {len(data)} bytes with sha256 {got[:16]}..., "
                       f"but {RECORD} recorded {want.get('bytes')} bytes with sha256 "
                       f"{want['sha256'][:16]}... (damaged on disk or edited); restore the run "
                       "directory from a copy or start a new run")
    try:
        meta = _header(data, path, fn).get("__metadata__") or {}
    except CheckpointError:
        if problem:
            _bad(fn, path, problem)
        raise
    if meta.get("model") and meta.get("model") != record["model"]:
        _bad(fn, path, f"holds weights of model {meta['model']!r}, but the run is of model "
             f"{record['model']!r}")
    if meta.get("token") != record["token"]:
        _bad(fn, path, f"does not belong to {RECORD} (step {meta.get('step')} vs "
             f"{record['step']}); the checkpoint is torn or was copied from another run")
    if problem:
        _bad(fn, path, problem)
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error type for bad files
        _bad(fn, path, f"corrupt checkpoint file ({e})")
    return tensors, meta


def _token_of(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                return None
            header = json.loads(f.read(n))
        return (header.get("__metadata__") or {}).get("token")
    except (OSError, struct.error, ValueError, UnicodeDecodeError, AttributeError):
        return None


# ---------------------------------------------------------------------------- optimizer / RNG

def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split ``optimizer.state_dict()`` into a JSON part and named tensors."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    state: dict[str, Any] = {}
    for idx, entry in sd["state"].items():
        out = {}
        for k, v in entry.items():
            if isinstance(v, Tensor):
                key = f"optimizer.{idx}.{k}"
                tensors[key] = v
                out[k] = {"tensor": key}
            else:
                out[k] = v
        state[str(idx)] = out
    groups = json.loads(json.dumps(sd["param_groups"]))  # tuples -> lists, checks JSON-ability
    return {"state": state, "param_groups": groups}, tensors


def restore_optimizer_state(optimizer: torch.optim.Optimizer, part: dict[str, Any],
                            tensors: dict[str, Tensor]) -> None:
    state = {}
    for idx, entry in part["state"].items():
        out = {}
        for k, v in entry.items():
            if isinstance(v, dict) and "tensor" in v:
                if v["tensor"] not in tensors:
                    _bad("resume", STATE, f"optimizer tensor {v['tensor']!r} is missing")
                out[k] = tensors[v["tensor"]]
            else:
                out[k] = v
        state[int(idx)] = out
    groups = part["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        _bad("resume", STATE, f"the optimizer state does not fit this model/optimizer ({e})")


def rng_state(rank_states: list[Tensor] | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Python, NumPy and torch RNG states (torch ones per rank when ``rank_states`` is given)."""
    py = random.getstate()
    npy = np.random.get_state()
    part: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], npy[1].tolist(), int(npy[2]), int(npy[3]), float(npy[4])],
    }
    tensors: dict[str, Tensor] = {}
    states = rank_states if rank_states is not None else [torch.get_rng_state()]
    for r, s in enumerate(states):
        tensors[f"rng.torch.{r}"] = s
    part["torch"] = len(states)
    cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
            cuda += 1
    part["cuda"] = cuda
    return part, tensors


def restore_rng_state(part: dict[str, Any], tensors: dict[str, Tensor], *, rank: int = 0) -> None:
    py = part["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = part["numpy"]
    np.random.set_state((npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))
    key = f"rng.torch.{rank}"
    if key not in tensors:
        _bad("resume", STATE, f"no torch RNG state for rank {rank}")
    torch.set_rng_state(tensors[key].to(torch.uint8))
    n = int(part.get("cuda", 0))
    if n and torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"].to(torch.uint8) for i in range(n)]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


_SCALER_KEYS = {"scale": float, "growth_factor": float, "backoff_factor": float,
                "growth_interval": int, "_growth_tracker": int}


def restore_scaler_state(scaler: torch.amp.GradScaler, part: Any) -> None:
    """Load the ``"grad_scaler"`` record into ``scaler`` (an fp16 run's; None otherwise)."""
    if not scaler.is_enabled():
        return  # fp32 / bf16: nothing to restore (the record holds null)
    def fits(key: str, value: Any) -> bool:
        kinds = (int, float) if _SCALER_KEYS[key] is float else (int,)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return False
        return value >= 0 if key == "_growth_tracker" else value > 0

    if not (isinstance(part, dict) and set(part) == set(_SCALER_KEYS)
            and all(fits(k, v) for k, v in part.items())):
        _bad("resume", RECORD, f"corrupt checkpoint record: an fp16 run needs its GradScaler "
             f"state (keys {', '.join(sorted(_SCALER_KEYS))}), got {part!r}")
    scaler.load_state_dict(part)


# ---------------------------------------------------------------------------- save / load

def save_checkpoint(run_dir: str | os.PathLike, *, weights: dict[str, Tensor],
                    state_tensors: dict[str, Tensor], record: dict[str, Any]) -> None:
    """Write a checkpoint (three files, see the module docstring), crash-safe."""
    run = Path(run_dir)
    token = uuid.uuid4().hex
    meta = {"format": FORMAT, "token": token, "step": str(record["step"]),
            "model": str(record.get("model", ""))}
    tensor_blobs = [(run / STATE, _to_bytes(state_tensors, meta)),
                    (run / WEIGHTS, _to_bytes(weights, meta))]
    files = {p.name: {"bytes": len(data), "sha256": _sha256(data)} for p, data in tensor_blobs}
    record = {"format": FORMAT, "token": token, **record, "files": files}
    record["sha256"] = _record_digest(record)
    blobs = [*tensor_blobs,
             (run / RECORD, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())]
    tmps = [p.with_name(p.name + ".tmp") for p, _ in blobs]
    try:
        for (_, data), tmp in zip(blobs, tmps, strict=True):
            write_fsynced(tmp, data)  # the JSON last: its presence means all three are complete
        fsync_dir(run)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for (path, _), tmp in zip(blobs, tmps, strict=True):
        os.replace(tmp, path)
    fsync_dir(run)


def recover(run_dir: str | os.PathLike) -> str | None:
    """Finish or undo a checkpoint write that a crash interrupted; returns what it did."""
    run = Path(run_dir)
    rec_tmp = run / (RECORD + ".tmp")
    others = [run / (STATE + ".tmp"), run / (WEIGHTS + ".tmp")]
    if not rec_tmp.exists():
        removed = [t for t in others if t.exists()]
        for t in removed:
            t.unlink()
        return "rolled back" if removed else None
    try:
        token = json.loads(rec_tmp.read_bytes())["token"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        for t in others + [rec_tmp]:
            t.unlink(missing_ok=True)
        return "rolled back"
    for tmp, final in zip(others, (run / STATE, run / WEIGHTS), strict=True):
        if tmp.exists():
            if _token_of(tmp) != token:
                _bad("resume", tmp, "interrupted checkpoint write cannot be recovered (token "
                     "mismatch); remove the checkpoint*.tmp files to go back to the previous "
                     "checkpoint")
            os.replace(tmp, final)
        elif _token_of(final) != token:
            _bad("resume", final, "interrupted checkpoint write cannot be recovered (token "
                 f"mismatch with {rec_tmp.name})")
    os.replace(rec_tmp, run / RECORD)
    fsync_dir(run)
    return "rolled forward"


@dataclass
class LoadedCheckpoint:
    record: dict[str, Any]
    weights: dict[str, Tensor]
    state: dict[str, Tensor]


def read_record(run_dir: str | os.PathLike, *, fn: str = "read_checkpoint") -> dict[str, Any]:
    """The checkpoint record of ``run_dir``, its format and digest checked."""
    path = Path(run_dir) / RECORD
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        _bad(fn, path, f"no checkpoint in {Path(run_dir)}")
    except OSError as e:
        _bad(fn, path, f"cannot read the checkpoint record ({e.strerror or e})")
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        _bad(fn, path, f"corrupt checkpoint record (not JSON: {e})")
    formats = (FORMAT, LEGACY_FORMAT)
    if not isinstance(record, dict) or record.get("format") not in formats:
        got = record.get("format") if isinstance(record, dict) else None
        _bad(fn, path, f"not a stnkit checkpoint record (format {got!r}, expected "
             f"{FORMAT!r} or {LEGACY_FORMAT!r})")
    if "sha256" in record or record["format"] != LEGACY_FORMAT:
        got = _record_digest(record)
        if record.get("sha256") != got:
            _bad(fn, path, f"corrupt checkpoint record: its content has sha256 {got[:16]}..., "
                 f"not the {str(record.get('sha256'))[:16]}... it records (damaged on disk or "
                 "edited); restore the run directory from a copy or start a new run")
    for key in ("step", "model", "config", "token"):
        if key not in record:
            _bad(fn, path, f"corrupt checkpoint record (no {key!r})")
    return record


def _check_finite(tensors: dict[str, Tensor], path: Path, fn: str) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            _bad(fn, path, f"tensor {name!r} holds {n} NaN or Inf value(s): these weights are "
                 "unusable (written by a run that diverged, or by another tool)")


def read_weights(run_dir: str | os.PathLike, record: dict[str, Any], *,
                 fn: str = "read_checkpoint") -> dict[str, Tensor]:
    """The model weights of the checkpoint ``record`` describes: digest, token, model and
    finiteness checked."""
    path = Path(run_dir) / WEIGHTS
    weights, meta = _read_safetensors(path, record, fn=fn)
    _check_finite(weights, path, fn)
    return weights


def read_checkpoint(run_dir: str | os.PathLike, *, state: bool = True,
                    fn: str = "read_checkpoint") -> LoadedCheckpoint:
    """Read (and check) a checkpoint; ``state=False`` skips the optimizer/RNG tensors."""
    record = read_record(run_dir, fn=fn)
    weights = read_weights(run_dir, record, fn=fn)
    tensors: dict[str, Tensor] = {}
    if state:
        path = Path(run_dir) / STATE
        tensors, _ = _read_safetensors(path, record, fn=fn)
    return LoadedCheckpoint(record, weights, tensors)


def load_weights_into(model: torch.nn.Module, weights: dict[str, Tensor], *, model_name: str,
                      path: str, fn: str = "load_checkpoint") -> None:
    """``model.load_state_dict(weights)`` with an error that says which model they fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    bad = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or bad:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:3]}")
        if bad:
            k = bad[0]
            detail.append(f"{k} has shape {tuple(weights[k].shape)}, expected {tuple(own[k].shape)}")
        _bad(fn, path, f"weights do not fit model {model_name!r} (a checkpoint of a different "
             "model?): " + "; ".join(detail))
    model.load_state_dict(weights)
