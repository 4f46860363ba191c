"""``stnkit models``."""

from __future__ import annotations

import pytest

from stnkit.cli import main
from stnkit.models import create_model, list_models, model_spec


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["model", "input", "classes", "parameters", "localisation"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_lists_every_model_with_its_parameter_count(capsys):
    assert main(["models"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert sorted(rows) == list_models()
    for name, row in rows.items():
        spec = model_spec(name)
        model = create_model(name, input_size=spec.default_input_size)
        n = sum(p.numel() for p in model.parameters())
        assert row[1] == "x".join(map(str, spec.default_input_size)), row
        assert row[2] == str(spec.default_num_classes), row
        assert row[3] == f"{n:,}", (row, n)
    assert rows["st-fcn-aff-x2"][1:3] == ["2x42x42", "19"]


def test_input_size_override(capsys):
    assert main(["models", "--input-size", "1,42,42", "--num-classes", "12"]) == 0
    rows = _rows(capsys.readouterr().out)
    n = sum(p.numel() for p in create_model("st-cnn-aff", input_size=(1, 42, 42),
                                            num_classes=12).parameters())
    assert rows["st-cnn-aff"][1:4] == ["1x42x42", "12", f"{n:,}"]
    assert rows["st-fcn-aff-x2"][3] == "-" and "n/a:" in " ".join(rows["st-fcn-aff-x2"])


def test_bad_input_size(capsys):
    with pytest.raises(SystemExit) as e:
        main(["models", "--input-size", "28,28"])
    assert e.value.code == 2
    assert "expected C,H,W" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["models", "--num-classes", "0"])
    assert e.value.code == 2
    assert "argument --num-classes: expected a positive integer, got '0'" in \
        capsys.readouterr().err
