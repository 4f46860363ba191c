"""The fuzz suite: property-based tests (hypothesis) over every public op and module.

Each property is "a correct answer (checked against ``F.grid_sample`` / ``F.affine_grid``,
or the torch backend where PyTorch has no such op) or a clear ``StnkitError`` naming the
argument". Example counts come from the hypothesis profile named by ``STNKIT_FUZZ_PROFILE``
(see ``tests/fuzz/_oracle.py``): ``default`` is bounded, derandomised and does not shrink,
for every test run (the whole directory in < 60 s on 2 cores); ``long`` (random, shrinking,
thousands of examples) is for ``scripts/fuzz_long.py``. The profiles are applied per test, never
loaded globally, so other test modules keep their own settings.
"""
