"""The PyTorch "Spatial Transformer Networks Tutorial" network (Ghassen Hamrouni).

Localisation: conv 8 k7 -> max-pool 2 -> ReLU -> conv 10 k5 -> max-pool 2 -> ReLU -> fc 32
-> ReLU -> affine regression (6), identity-initialised. The transformer keeps the input
size. Classifier: conv 10 k5 -> max-pool 2 -> ReLU -> conv 20 k5 -> dropout2d -> max-pool 2
-> ReLU -> fc 50 -> ReLU -> dropout -> fc 10. Differences from the tutorial: it returns
logits (the tutorial ends in ``log_softmax``; use ``F.cross_entropy``), ``align_corners``
is explicit (False), and inputs are in [0, 1] (the tutorial normalises with MNIST's mean
and std in its data pipeline: ``stnkit.data.MNIST_MEAN`` / ``MNIST_STD``).
"""

from __future__ import annotations

from stnkit.models.nets import STClassifier, TutorialClassifier
from stnkit.models.registry import register_model
from stnkit.nn import SpatialTransformer, TutorialLocalization

__all__: list[str] = []


@register_model("stn-tutorial", description="the PyTorch STN tutorial network (affine, "
                "loc conv 8 k7 / conv 10 k5 / fc 32)")
def stn_tutorial(*, input_size, num_classes, transform="affine", mode="bilinear",
                 padding_mode="zeros", align_corners=False):
    """The PyTorch tutorial's STN; ``transform`` swaps the affine transformer for another."""
    st = SpatialTransformer(TutorialLocalization(input_size), transform, mode=mode,
                            padding_mode=padding_mode, align_corners=align_corners)
    return STClassifier("stn-tutorial", input_size, TutorialClassifier(input_size, num_classes),
                        st, num_classes=num_classes)
