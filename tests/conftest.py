"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli(capsys):
    """Run ``stnkit ...`` in this process; returns (exit code, stdout, stderr)."""
    from stnkit.cli import main

    def call(*args):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return call
