"""
torch.compile, mixed precision and ONNX export
==============================================

A trained spatial transformer model is an ordinary ``nn.Module``: ``torch.compile`` keeps
stnkit's fused warp kernels in its graph (they are registered PyTorch operators, with fake
implementations and autograd formulas), ``torch.autocast`` runs it in bfloat16, and
:func:`stnkit.export.to_onnx` writes it as ONNX, where the warps become ``AffineGrid`` +
``GridSample``, checked here with onnxruntime.

Needs the ``onnx`` extra (``pip install -e ".[onnx]"``: onnx, onnxscript, onnxruntime).
"""

# %%
# Train a model
# -------------
#
# This time with stnkit's own training loop: a :class:`stnkit.train.TrainConfig` names
# the zoo model, the data and the schedule; :func:`stnkit.train.train` writes a run
# directory (config, metrics, checksummed checkpoints) and
# :func:`stnkit.train.load_model` reads the model back, in eval mode. 80 iterations of
# the paper's ST-CNN on rotated digits (``R``), enough for this tutorial's checks, not for
# a good model; ``STNKIT_DOCS_QUICK=1`` makes it a dry run.

import os
import tempfile
import time
from pathlib import Path

import torch

from stnkit.data import DistortedMNIST
from stnkit.train import TrainConfig, load_model, train

QUICK = os.environ.get("STNKIT_DOCS_QUICK") == "1"
work = Path(tempfile.mkdtemp(prefix="stnkit-export-"))
config = TrainConfig(model="st-cnn-aff", data="R", data_dir="embedded", schedule="cpu",
                     iterations=80, train_size=2560, test_size=500, eval_every=10**6,
                     checkpoint_every=10**6, out=str(work / "run"), dry_run=QUICK)
metrics = train(config, progress=False)
print(f"{metrics['model']} on {metrics['data']}: {metrics['step']} steps, "
      f"test error {metrics['test_error']:.2f} %")

model = load_model(work / "run")
test_set = DistortedMNIST("R", "test", root="embedded", progress=False)
images = torch.stack([test_set[i][0] for i in range(256)])  # (256, 1, 28, 28)
labels = torch.tensor([test_set[i][1] for i in range(256)])
with torch.no_grad():
    reference = model(images)
print("eager error on 256 test digits:",
      f"{100 * (reference.argmax(1) != labels).float().mean():.2f} %")

# %%
# torch.compile
# -------------
#
# The first call compiles (inductor generates and builds C++ for the CPU; tens of seconds
# here), later calls reuse the compiled graph. The spatial transformer's fused warp stays
# one operator in it; ``fullgraph=True`` checks that nothing falls back to Python.

compiled = torch.compile(model, fullgraph=True)
start = time.perf_counter()
with torch.no_grad():
    out = compiled(images)
print(f"first compiled call: {time.perf_counter() - start:.1f} s; "
      f"max |compiled - eager| = {(out - reference).abs().max():.2e}")

# %%
# The same model trains compiled too (the warp's backward is a registered operator as
# well): ``torch.compile(model)`` in a training loop, or ``benchmarks/compile_step.py``
# for the timings. On the CPU the step time is dominated by the convolutions, so compiling
# gains little there.
#
# Mixed precision
# ---------------
#
# Under ``torch.autocast`` the convolutions and linear layers run in bfloat16, while the
# spatial transformer keeps its geometry in at least float32: its final theta regression
# runs in the layer's own dtype, and :func:`stnkit.ops.warp` computes coordinates and
# accumulates samples in float32, returning the image's dtype (the policy is in
# :mod:`stnkit.ops`). So the prediction barely moves. bfloat16 pays only on hardware that
# computes in it (recent GPUs, CPUs with AMX or AVX512-BF16); on a CPU without it, it is
# slower than float32 (see :doc:`/reproductions/train-step`), which is why
# the ``--precision`` flag of ``stnkit train`` defaults to fp32.

with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    low = model(images)
agree = (low.argmax(1) == reference.argmax(1)).float().mean()
print(f"bf16 output dtype {low.dtype}; same class as fp32 for {100 * agree:.1f} % of the digits")

# %%
# ONNX export, checked with onnxruntime
# -------------------------------------
#
# :func:`~stnkit.export.to_onnx` exports with a symbolic batch dimension (opset 20, the
# first with ``AffineGrid`` and N-D ``GridSample``); :func:`~stnkit.export.onnx_session`
# and :func:`~stnkit.export.run_onnx` run it with onnxruntime. stnkit's rule that points
# outside the image and non-finite points read 0 is part of the exported graph.

from stnkit.export import onnx_session, run_onnx, to_onnx  # noqa: E402

path = to_onnx(model, images[:1], work / "st-cnn-aff.onnx")
session = onnx_session(path)
onnx_out = run_onnx(session, images)  # the whole batch of 256: the batch is symbolic
print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB; "
      f"max |onnxruntime - torch| = {(onnx_out - reference).abs().max():.2e}")
print("same predictions:", torch.equal(onnx_out.argmax(1), reference.argmax(1)))

# %%
# Which nodes did the spatial transformer become?

import onnx  # noqa: E402

ops_used = sorted({node.op_type for node in onnx.load(path).graph.node})
print(ops_used)

# %%
# From the command line the same export also evaluates the whole test split with torch and
# with onnxruntime and refuses to write the file if they disagree:
# ``stnkit export RUN_DIR -o model.onnx`` (:doc:`/cli`).

import shutil  # noqa: E402

shutil.rmtree(work)
