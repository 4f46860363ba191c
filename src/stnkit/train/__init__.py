"""Training, evaluation and reproduction of the paper's tables.

- :class:`TrainConfig` (+ :func:`resolve_config`): every setting of a run; presets ``paper``
  and ``cpu``; YAML/TOML/JSON files.
- :func:`train`, :func:`resume`: the loop (single process or ``torchrun``), bitwise-exact
  resume on CPU, crash-safe checkpoints, Ctrl-C and divergence handling.
- :func:`evaluate`: test error, per-class errors, confusion matrix -> ``eval.json``;
  :func:`load_model`: a run's model with its last weights.
- :func:`reproduce`: the paper's Table 1 / cluttered / addition experiments, cell by cell.

The run-directory layout is described in :mod:`stnkit.train.loop`.
"""

import importlib
import sys
import types

# Imported on first use (PEP 562), so that `stnkit.train.config` (the command line's flags)
# can be imported without torch; `stnkit.train.X` is the same object as the eager
# `from stnkit.train.M import X` gave.
_LAZY = {
    "CheckpointError": "checkpoint",
    "PRESETS": "config", "TrainConfig": "config", "load_config_file": "config",
    "resolve_config": "config",
    "evaluate": "evaluate", "load_model": "evaluate",
    "RunDirError": "loop", "TrainingDiverged": "loop", "TrainingInterrupted": "loop",
    "resume": "loop", "train": "loop",
    "PAPER_NUMBERS": "paper", "paper_error": "paper",
    "EXPERIMENTS": "reproduce", "reproduce": "reproduce",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    # Importing the submodules `evaluate` and `reproduce` would set the package attributes of
    # those names to the modules; the functions of the same names keep them, as before.
    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "EXPERIMENTS",
    "PAPER_NUMBERS",
    "PRESETS",
    "CheckpointError",
    "RunDirError",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "evaluate",
    "load_model",
    "load_config_file",
    "paper_error",
    "reproduce",
    "resolve_config",
    "resume",
    "train",
]
