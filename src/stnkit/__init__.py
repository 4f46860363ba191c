"""stnkit: Spatial Transformer Networks (Jaderberg et al., NIPS 2015) for PyTorch.

Layers, from the bottom up (each imports only the ones above it in this list):

- :mod:`stnkit.ops`: grid generators, samplers and warps with hand-derived gradients.
- :mod:`stnkit.nn`: ``SpatialTransformer`` and localisation networks.
- :mod:`stnkit.models`: the paper's model zoo (``create_model``, ``list_models``).
- :mod:`stnkit.data`: MNIST and the distorted-MNIST datasets.
- :mod:`stnkit.train`: training, checkpoints, evaluation, reproduction of the paper's tables.
- :mod:`stnkit.viz`: pictures.

Convention (everywhere): the one of ``torch.nn.functional.grid_sample``. Coordinates are
(x, y[, z]), normalised to [-1, 1]; ``align_corners`` is explicit and defaults to False;
theta maps *output* coordinates to *input* coordinates.
"""

__version__ = "0.1.0"
