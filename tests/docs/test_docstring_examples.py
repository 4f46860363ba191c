"""Every ``>>>`` example in stnkit's docstrings runs as written and prints what it shows.

The examples are read in ``help()`` and on the API reference pages, and copied from there
into a fresh interpreter, so each runs here with *empty* globals: it must import what it
uses (the module's own namespace does not leak in, as ``python -m doctest`` would let it).
They run in a temporary working directory (an example that writes a file writes it there),
and none may be skipped.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import pkgutil
import types

import pytest

import stnkit

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules that need an optional package: onnxruntime is in the `test` extra; triton is not
# (CI installs it after the README's test command, and the docs tests run again after that).
NEEDS = {"stnkit.export": "onnxruntime",
         "stnkit.ops.kernels._triton_2d": "triton",
         "stnkit.ops.kernels._triton_3d": "triton"}

# Examples that must exist, so that a finder which sees nothing cannot pass.
EXPECTED = {
    "stnkit._checks",
    "stnkit._io.atomic_path",
    "stnkit.data.datasets.DistortedMNIST",
    "stnkit.data.mnist.read_idx",
    "stnkit.export.to_onnx",
    "stnkit.models.registry.create_model",
    "stnkit.models.registry.register_model",
    "stnkit.nn.groups.param_groups",
    "stnkit.nn.transformer.SpatialTransformer",
    "stnkit.ops.grids.affine_grid",
    "stnkit.ops.sample.sample",
    "stnkit.train.config",
}


def module_names() -> list[str]:
    """stnkit and every module under it (``__main__`` would run the command line)."""
    found = [m.name for m in pkgutil.walk_packages(stnkit.__path__, "stnkit.")
             if not m.name.endswith("__main__")]
    return ["stnkit"] + sorted(found)


def import_or_skip(name: str) -> types.ModuleType:
    """The module ``name``, skipping the test where an optional package it needs is missing."""
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    return importlib.import_module(name)


def examples(module: types.ModuleType) -> list[doctest.DocTest]:
    """The docstring examples defined in ``module`` (not those of names it imports), each
    with empty globals."""
    tests = doctest.DocTestFinder().find(module, module.__name__, globs={})
    return [t for t in tests if t.examples]


def run_examples(module: types.ModuleType) -> tuple[int, int, str]:
    """(failed, attempted, report) of running ``module``'s docstring examples."""
    runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
    report = io.StringIO()
    for test in examples(module):
        runner.run(test, out=report.write)
    failed, attempted = runner.summarize(verbose=False)
    return failed, attempted, report.getvalue()


MODULES = module_names()


@pytest.fixture
def registry(monkeypatch):
    """A copy of the model registry, so that ``register_model``'s example registers its
    model for this test only."""
    from stnkit.models import registry as reg

    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    return reg


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name, tmp_path, monkeypatch, registry):
    module = import_or_skip(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STNKIT_OFFLINE", "1")
    failed, attempted, report = run_examples(module)
    assert not failed, f"{name}: {failed} of {attempted} examples failed\n{report}"


def test_every_expected_example_is_found_and_none_is_skipped():
    found, skipped = set(), []
    for name in MODULES:
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            continue  # its optional package is missing (the other test skips it too)
        for test in examples(importlib.import_module(name)):
            found.add(test.name)
            skipped += [f"{test.name}: {e.source.strip()}" for e in test.examples
                        if e.options.get(doctest.SKIP)]
    assert EXPECTED <= found, f"no examples found in {sorted(EXPECTED - found)}"
    assert not skipped, "examples marked +SKIP (make them run):\n" + "\n".join(skipped)


def test_the_registry_example_leaves_the_registry_alone():
    from stnkit.models import list_models

    assert "my-net" not in list_models()


def _module(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    exec("import torch", module.__dict__)  # the module itself imports torch
    return module


def test_a_wrong_printed_value_fails():
    failed, attempted, report = run_examples(_module("m", ">>> 1 + 1\n3\n"))
    assert (failed, attempted) == (1, 1) and "Expected:\n    3" in report, report


def test_a_name_the_example_does_not_import_fails():
    # The module imports torch, but its example does not: it must fail as a reader's would.
    failed, attempted, report = run_examples(_module("m", ">>> torch.zeros(2).shape\n"
                                                          "torch.Size([2])\n"))
    assert (failed, attempted) == (1, 1) and "NameError" in report, report
    failed, _, report = run_examples(_module("m", ">>> import torch\n>>> torch.zeros(2).shape\n"
                                                  "torch.Size([2])\n"))
    assert not failed, report
