"""The model zoo: the paper's distorted-MNIST models (Table 1), MNIST addition, the tutorial.

``create_model(name, *, input_size, num_classes=None, **overrides)`` builds one;
``list_models()`` names them; ``@register_model`` adds your own. Models take images in
[0, 1] (B, C, H, W) and return logits (B, num_classes); any spatial transformer comes first.

==========================  ================================================================
name                        model
==========================  ================================================================
fcn, cnn                    the paper's baselines
st-fcn-{aff,proj,tps}       ST-FCN: affine / projective / 16-point TPS transformer -> FCN
st-cnn-{aff,proj,tps}       ST-CNN: the same with the CNN localisation net and classifier
st-fcn-{aff,proj,tps}-x2    MNIST addition: two transformers (one per channel) -> FCN
stn-tutorial                the PyTorch STN tutorial network
==========================  ================================================================

Default input sizes: (1, 28, 28) for every model but the ``-x2`` ones, (2, 42, 42). Widths
and the ~400k-parameter budget: :mod:`stnkit.models.paper`.
"""

from stnkit.models import paper, tutorial  # noqa: F401  (register the models)
from stnkit.models.nets import CNNClassifier, FCNClassifier, STClassifier, TutorialClassifier
from stnkit.models.paper import PARAM_BUDGET, default_st_output_size
from stnkit.models.registry import ModelSpec, create_model, list_models, model_spec, register_model

__all__ = [
    "PARAM_BUDGET",
    "CNNClassifier",
    "FCNClassifier",
    "ModelSpec",
    "STClassifier",
    "TutorialClassifier",
    "create_model",
    "default_st_output_size",
    "list_models",
    "model_spec",
    "register_model",
]
