"""The scripts in scripts/ are not a package: tests import them as ``python scripts/x.py``
would see them, with scripts/ first on sys.path."""

import importlib
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture()
def import_script(monkeypatch):
    """``import_script("name")``: the module of scripts/name.py, dropped again after the test."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    loaded: list[str] = []

    def load(name: str):
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
