"""The paper's numbers (% test error), each with where in the paper it is printed.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NIPS 2015,
arXiv:1506.02025. Only numbers read in the paper are listed; a cell the paper does not
report is simply absent (``paper_error`` returns None and the tables print "n/a").

- Table 1 (left): every model x R, RTS, P, E.
- Cluttered MNIST: Sect. 4.1 gives the TC figures in its text ("an FCN gets 13.2% error, a
  CNN gets 3.5% error, while an ST-FCN gets 2.0% error and an ST-CNN gets 1.7% error") without
  naming the transform of the ST models; no classification figure is given for T.
- MNIST addition: Appendix A.1 gives in its text FCN 47.7%, CNN 14.7%, a single-transformer
  ST-FCN 18.5% and the 2xST-FCN 5.8%, again without naming the transform; the per-transform
  columns of Table 4 are not transcribed here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CITATION", "PAPER_NUMBERS", "PaperNumber", "paper_error"]

CITATION = ("M. Jaderberg, K. Simonyan, A. Zisserman, K. Kavukcuoglu. Spatial Transformer "
            "Networks. NIPS 2015, arXiv:1506.02025")


@dataclass(frozen=True)
class PaperNumber:
    experiment: str
    variant: str
    model: str  # one of our model names
    error: float  # percent
    source: str
    exact: bool = True  # False: the paper names the family (ST-FCN/ST-CNN), not the transform


def _table1() -> list[PaperNumber]:
    rows = {  # Table 1 (left): R, RTS, P, E
        "fcn": (2.1, 5.2, 3.1, 3.2),
        "cnn": (1.2, 0.8, 1.5, 1.4),
        "st-fcn-aff": (1.2, 0.8, 1.5, 2.7),
        "st-fcn-proj": (1.3, 0.9, 1.4, 2.6),
        "st-fcn-tps": (1.1, 0.8, 1.4, 2.4),
        "st-cnn-aff": (0.7, 0.5, 0.8, 1.2),
        "st-cnn-proj": (0.8, 0.6, 0.8, 1.3),
        "st-cnn-tps": (0.7, 0.5, 0.8, 1.1),
    }
    variants = ("R", "RTS", "P", "E")
    return [PaperNumber("table1", v, m, e, "Table 1 (left)")
            for m, errs in rows.items() for v, e in zip(variants, errs, strict=True)]


def _cluttered() -> list[PaperNumber]:
    src = "Sect. 4.1 text (60x60 translated + cluttered)"
    out = [PaperNumber("cluttered", "TC", "fcn", 13.2, src),
           PaperNumber("cluttered", "TC", "cnn", 3.5, src)]
    for t in ("aff", "proj", "tps"):
        out.append(PaperNumber("cluttered", "TC", f"st-fcn-{t}", 2.0, src + "; transform not named", False))
        out.append(PaperNumber("cluttered", "TC", f"st-cnn-{t}", 1.7, src + "; transform not named", False))
    return out


def _addition() -> list[PaperNumber]:
    src = "Appendix A.1 text (MNIST addition)"
    out = [PaperNumber("addition", "addition", "fcn", 47.7, src),
           PaperNumber("addition", "addition", "cnn", 14.7, src)]
    for t in ("aff", "proj", "tps"):
        out.append(PaperNumber("addition", "addition", f"st-fcn-{t}", 18.5,
                               src + "; single ST-FCN, transform not named", False))
        out.append(PaperNumber("addition", "addition", f"st-fcn-{t}-x2", 5.8,
                               src + "; 2xST-FCN, transform not named", False))
    return out


PAPER_NUMBERS: tuple[PaperNumber, ...] = tuple(_table1() + _cluttered() + _addition())
"""Every % test error read in the paper, with where it is printed (:class:`PaperNumber`)."""
_INDEX = {(p.experiment, p.variant, p.model): p for p in PAPER_NUMBERS}


def paper_error(experiment: str, variant: str, model: str) -> PaperNumber | None:
    """The paper's figure for a cell, or None where the paper gives none."""
    return _INDEX.get((experiment, variant, model))
