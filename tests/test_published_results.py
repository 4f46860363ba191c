"""The published 3-seed Table 1 comes from the committed run records: every cell of
docs/results/table1-cpu-3seeds.md and of the README's table is recomputed here from the
runs' checkpoint records (their digests checked), so an edited figure or a lost record fails."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from stnkit.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "results" / "table1-cpu-3seeds"
TABLE = ROOT / "docs" / "results" / "table1-cpu-3seeds.md"
README = ROOT / "README.md"
VARIANTS = ("R", "RTS", "P", "E")
# one cell: "3.39 ± 0.20 [3] (paper 1.2)" in the results file, "3.39 ± 0.20 (1.2)" in the README
CELL = re.compile(r"^(?P<mean>n/a|\d+\.\d\d)(?: ± (?P<std>\d+\.\d\d))?(?: \[(?P<n>\d+)\])?"
                  r" \((?:paper )?(?P<paper>n/a|\d+\.\d)†?\)$")


def _record_errors(root: Path) -> dict[tuple[str, str], list[float]]:
    """Final test errors of the finished runs under ``root``/runs/<variant>/<model>/seed<k>."""
    errors: dict[tuple[str, str], list[float]] = {}
    for record_file in sorted(root.glob("runs/*/*/seed*/" + ckpt.RECORD)):
        run = record_file.parent
        variant, model, seed = run.parts[-3], run.parts[-2], int(run.name[len("seed"):])
        record = ckpt.read_record(run)  # raises if the record was edited
        config = record["config"]
        where = run.relative_to(root)
        assert (config["data"], config["model"], config["seed"]) == (variant, model, seed), where
        assert (config["schedule"], config["precision"]) == ("cpu", "fp32"), where
        if not record["finished"]:
            continue
        assert record["step"] == config["iterations"], where
        errors.setdefault((variant, model), []).append(float(record["metrics"]["test"]["error"]))
    return errors


def _table(text: str, heading: str) -> dict[tuple[str, str], dict[str, str | None]]:
    """The cells of the first markdown table after ``heading``, by (variant, model)."""
    rest = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(rest) if line.startswith("|"))
    lines = []
    for line in rest[start:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = {}
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        for variant, cell in zip(header[1:], row[1:]):
            match = CELL.match(cell)
            if match is None:
                raise ValueError(f"cannot read the cell {cell!r} of {row[0]} / {variant}")
            cells[(variant, row[0])] = match.groupdict()
    return cells


def mismatches(cells: dict, errors: dict[tuple[str, str], list[float]]) -> list[str]:
    """Cells whose mean, std or seed count differ from the records' (empty: all agree)."""
    found = []
    for key, cell in sorted(cells.items()):
        errs = errors.get(key, [])
        want_mean = f"{statistics.fmean(errs):.2f}" if errs else "n/a"
        want_std = f"{statistics.stdev(errs):.2f}" if len(errs) > 1 else None
        want_n = str(len(errs)) if errs else None
        if cell["n"] is None:
            # the README shows complete cells only (its count is said in its heading)
            want_n = None
        have = (cell["mean"], cell["std"], cell["n"])
        if have != (want_mean, want_std, want_n):
            found.append(f"{key}: published {have}, records give {(want_mean, want_std, want_n)}")
    unpublished = sorted(set(errors) - set(cells))
    found += [f"{key}: in the records, not in the table" for key in unpublished]
    return found


@pytest.fixture(scope="module")
def errors():
    found = _record_errors(RECORDS)
    assert found, f"no finished run records under {RECORDS}"
    return found


def test_the_results_table_is_the_records(errors):
    cells = _table(TABLE.read_text(encoding="utf-8"), "| model |")
    assert len(cells) == 32, sorted(cells)
    assert mismatches(cells, errors) == []


def test_the_readme_table_is_the_records(errors):
    readme = README.read_text(encoding="utf-8")
    cells = _table(readme, "### Table 1: distorted MNIST")
    assert {v for v, _ in cells} == set(VARIANTS)
    assert mismatches(cells, errors) == []


def test_the_comparison_can_fail(errors):
    cells = _table(TABLE.read_text(encoding="utf-8"), "| model |")
    key = next(iter(errors))
    assert mismatches(cells, {**errors, key: [e + 0.01 for e in errors[key]]})  # mean moved
    assert mismatches(cells, {**errors, key: errors[key][:1]})  # a seed lost
    fewer = dict(errors)
    del fewer[key]
    assert mismatches(cells, fewer)  # a cell published without records
    with pytest.raises(ValueError, match="cannot read the cell"):
        _table("| model | R |\n|---|---|\n| cnn | 3.4 (paper 1.2) |\n", "| model |")
