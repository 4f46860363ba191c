"""scripts/precision_gradients.py: bf16 against fp32 gradients at the same weights."""


import pytest
import torch

from stnkit.models import create_model


@pytest.fixture()
def script(import_script):
    return import_script("precision_gradients")


def test_parts_and_comparison(script):
    assert script.part_of("transformer.localization.net.1.weight") == "localisation net"
    assert script.part_of("transformer.regressor.linear.bias") == "theta regressor"
    assert script.part_of("classifier.net.7.weight") == "classifier"
    a = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert script.compare(a, 2 * a) == pytest.approx((1.0, 2.0))
    assert script.compare(a, torch.tensor([-4.0, 3.0], dtype=torch.float64)) \
        == pytest.approx((0.0, 1.0))
    assert script.compare(a, torch.zeros(2, dtype=torch.float64)) is None


def test_rows_of_a_fresh_and_a_moved_st_cnn(script):
    torch.manual_seed(0)
    model = create_model("st-cnn-aff", input_size=(1, 28, 28), num_classes=10)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    x2, y2 = torch.rand(4, 1, 28, 28), torch.tensor([4, 5, 6, 7])
    rows = script.rows("init", model, [(x, y), (x2, y2)])
    # a fresh regressor has zero weights: no gradient reaches the localisation net
    assert rows[0] == "| init | localisation net | - | - | - (zero gradient) | - |"
    for row, part in zip(rows[1:], ("theta regressor", "classifier"), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == part
        assert float(cells[2]) > 0.95 and 0.5 < float(cells[4]) < 2, row  # bf16 near fp32
        assert -1 <= float(cells[5]) < 0.95, row  # two batches: different gradients
    with torch.no_grad():
        model.transformer.regressor.linear.weight.normal_(0, 0.01)
    rows = script.rows("moved", model, [(x, y)])
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "localisation net" and float(cells[2]) > 0.9, rows[0]
    assert cells[5] == "-"  # one batch: nothing to compare it with
