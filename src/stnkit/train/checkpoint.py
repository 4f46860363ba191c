"""Checkpoints: safetensors for tensors, JSON for everything else; no pickle anywhere.

A checkpoint is three files in the run directory:

- ``checkpoint.safetensors``: the model's weights (``model.state_dict()``), nothing else, so
  ``safetensors.torch.load_file`` + ``load_state_dict`` is all a reader needs;
- ``checkpoint.state.safetensors``: optimizer buffers and RNG states (tensors);
- ``checkpoint.json``: step, model, resolved config, optimizer hyper-parameters and
  non-tensor state, scheduler, RNG states (Python, NumPy; torch ones named in the state
  file), the data-order position.

Every save writes all three to ``*.tmp`` files (each fsynced, the JSON last), then renames
them over the old ones in a fixed order. The three carry the same random ``token``. A kill
during the renames leaves a complete, fsynced ``checkpoint.json.tmp`` behind:
:func:`recover` finishes the renames (roll forward). A kill before that leaves the old
checkpoint untouched and the partial ``*.tmp`` files are deleted (roll back).
"""

from __future__ import annotations

import json
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

from stnkit._io import atomic_write_bytes, atomic_write_json, fsync_dir, write_fsynced

__all__ = [
    "CheckpointError",
    "FORMAT",
    "LoadedCheckpoint",
    "atomic_write_bytes",
    "atomic_write_json",
    "optimizer_state",
    "read_checkpoint",
    "read_weights",
    "recover",
    "restore_optimizer_state",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]

FORMAT = "stnkit-checkpoint-1"
WEIGHTS = "checkpoint.safetensors"
STATE = "checkpoint.state.safetensors"
RECORD = "checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, torn or belongs to another model."""


# ---------------------------------------------------------------------------- atomic files

# ---------------------------------------------------------------------------- safetensors

def _to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return save(flat, metadata=metadata)


def _header(data: bytes, path: Path) -> dict[str, Any]:
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
        raise CheckpointError(f"{path}: corrupt checkpoint file (not safetensors: {e})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors.torch import load

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file is missing") from None
    meta = _header(data, path).get("__metadata__") or {}
    try:
        tensors = load(data)
    except Exception as e:  # safetensors raises its own error type for bad files
        raise CheckpointError(f"{path}: corrupt checkpoint file ({e})") from None
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
                    raise CheckpointError(f"optimizer tensor {v['tensor']!r} missing from {STATE}")
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
        raise CheckpointError(f"the optimizer state does not fit this model/optimizer ({e})") from None


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
        raise CheckpointError(f"{STATE} has no torch RNG state for rank {rank}")
    torch.set_rng_state(tensors[key].to(torch.uint8))
    n = int(part.get("cuda", 0))
    if n and torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"].to(torch.uint8) for i in range(n)]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ---------------------------------------------------------------------------- save / load

def save_checkpoint(run_dir: str | os.PathLike, *, weights: dict[str, Tensor],
                    state_tensors: dict[str, Tensor], record: dict[str, Any]) -> None:
    """Write a checkpoint (three files, see the module docstring), crash-safe."""
    run = Path(run_dir)
    token = uuid.uuid4().hex
    meta = {"format": FORMAT, "token": token, "step": str(record["step"]),
            "model": str(record.get("model", ""))}
    record = {"format": FORMAT, "token": token, **record}
    blobs = [
        (run / STATE, _to_bytes(state_tensors, meta)),
        (run / WEIGHTS, _to_bytes(weights, meta)),
        (run / RECORD, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode()),
    ]
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
                raise CheckpointError(f"{tmp}: interrupted checkpoint write cannot be recovered "
                                      "(token mismatch); remove the *.tmp files to go back to the "
                                      "previous checkpoint")
            os.replace(tmp, final)
        elif _token_of(final) != token:
            raise CheckpointError(f"{final}: interrupted checkpoint write cannot be recovered")
    os.replace(rec_tmp, run / RECORD)
    fsync_dir(run)
    return "rolled forward"


@dataclass
class LoadedCheckpoint:
    record: dict[str, Any]
    weights: dict[str, Tensor]
    state: dict[str, Tensor]


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / RECORD
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint in {Path(run_dir)}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint record ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stnkit checkpoint record (format "
                              f"{record.get('format') if isinstance(record, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    for key in ("step", "model", "config", "token"):
        if key not in record:
            raise CheckpointError(f"{path}: corrupt checkpoint record (no {key!r})")
    return record


def read_weights(run_dir: str | os.PathLike, record: dict[str, Any]) -> dict[str, Tensor]:
    path = Path(run_dir) / WEIGHTS
    weights, meta = _read_safetensors(path)
    if meta.get("model") and meta.get("model") != record["model"]:
        raise CheckpointError(f"{path}: holds weights of model {meta['model']!r}, but the run is "
                              f"of model {record['model']!r}")
    if meta.get("token") != record["token"]:
        raise CheckpointError(f"{path}: does not belong to {RECORD} (step {meta.get('step')} vs "
                              f"{record['step']}); the checkpoint is torn or was copied from "
                              "another run")
    return weights


def read_checkpoint(run_dir: str | os.PathLike, *, state: bool = True) -> LoadedCheckpoint:
    """Read (and check) a checkpoint; ``state=False`` skips the optimizer/RNG tensors."""
    record = read_record(run_dir)
    weights = read_weights(run_dir, record)
    tensors: dict[str, Tensor] = {}
    if state:
        path = Path(run_dir) / STATE
        tensors, meta = _read_safetensors(path)
        if meta.get("token") != record["token"]:
            raise CheckpointError(f"{path}: does not belong to {RECORD}; the checkpoint is torn "
                                  "or was copied from another run")
    return LoadedCheckpoint(record, weights, tensors)


def load_weights_into(model: torch.nn.Module, weights: dict[str, Tensor], *, model_name: str,
                      path: str) -> None:
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
        raise CheckpointError(f"{path}: weights do not fit model {model_name!r} (a checkpoint of a "
                              f"different model?): " + "; ".join(detail))
    model.load_state_dict(weights)
