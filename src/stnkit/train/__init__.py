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

from stnkit.train.checkpoint import CheckpointError
from stnkit.train.config import PRESETS, TrainConfig, load_config_file, resolve_config
from stnkit.train.evaluate import evaluate, load_model
from stnkit.train.loop import RunDirError, TrainingDiverged, TrainingInterrupted, resume, train
from stnkit.train.paper import PAPER_NUMBERS, paper_error
from stnkit.train.reproduce import EXPERIMENTS, reproduce

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
