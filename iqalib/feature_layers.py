"""A quality model's own feature layers: a trainable copy of the classifier's backbone from the
input up to the deepest block the quality heads read (``Classifier.early_layers``; EfficientNet-
Lite0: the stem and blocks 0–3), initialised from the classifier's weights, giving the same
early-layer statistics (``classifiers.tap_statistics``) as the shared pass until it is trained.

Why it exists: NT (Liu et al., CVPR 2024) trains the whole NR-IQA model. DTNIQ-f's input gradient
is Jᵀ·∇heads, with J the feature Jacobian of the frozen backbone, and heads alone cannot make J
small; a copy lets NT train J while the classifier itself stays frozen and untouched. Costs one
more pass through the copied blocks per scored image (the classifier's pass still classifies).

For a model that reads ``pooled`` features (the paper's DTNIQ-f) the deepest layer the heads read
is the last: the copy is the whole backbone, and it gives the pooled embedding.

The classifier runs with its BatchNorms folded into the convolutions before them
(``folding.fold_batchnorm``), so the copy has none: what NT trains is each convolution's
weights and bias, the frozen BatchNorm's affine map included. Batch statistics are not used by
default; ``gradnorm.train_nt(batchnorm="train")`` copies an unfolded classifier instead, trains its
BatchNorm on batch statistics as the authors train HyperIQA's, and folds the running statistics
it learnt once training ends (README: on training photos it doubles the cut upward, leaves the
downward one, and costs 0.06 SROCC against the frozen form). Before folding
(up to EMBEDDING_VERSION 2) the copy kept BatchNorm in eval mode with its scale and shift
trainable: the same function, another parametrisation of it.
Knows nothing of heads, params or notebooks.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from iqalib.classifiers import Classifier, tap_statistics
from iqalib.folding import fold_batchnorm_checked

__all__ = ["FeatureLayers"]


class FeatureLayers(nn.Module):
    """Normalised network input (N, 3, S, S) -> (N, F) features the heads read, through a copy of
    the classifier's layers: ``multilevel``, early-layer statistics of a copy of
    ``classifier.early_layers()``; ``pooled``, the embedding of a copy of the whole backbone. Kept
    in eval mode by ``train`` (see the module docstring). A classifier loaded unfolded gives a copy
    folded all the same, the layout a saved model's layers have, unless ``keep_batchnorm``."""

    def __init__(self, classifier: Classifier, features: str = "multilevel", keep_batchnorm: bool = False):
        super().__init__()
        if features == "pooled":
            layers, taps = [classifier.backbone], []
        elif features == "multilevel":
            layers, taps = classifier.early_layers(), classifier.stat_taps()
            if not layers:
                raise ValueError(f"{classifier.name} has no known early layers to copy for multilevel features")
        else:
            raise ValueError(f"features must be 'multilevel' or 'pooled', got {features!r}")
        self.features = features
        self.layers = nn.ModuleList(copy.deepcopy(layers))
        self.taps = [i for i, layer in enumerate(layers) if any(layer is tap for tap in taps)]
        self.source_weights_id = classifier.weights_id
        self.input_size = classifier.input_size
        self.to(classifier.device).eval()
        if not keep_batchnorm:
            self.fold()

    def fold(self) -> "FeatureLayers":
        """In place: every BatchNorm (eval mode: its running statistics) folded into the convolution
        before it, checked on a probe (``folding.fold_batchnorm_checked``). Where the check fails
        (it warns) the BatchNorms stay, in eval mode: the layout a copy of the same classifier then
        has too, since its own fold fails the same way."""
        device = next(self.parameters()).device
        self.layers = fold_batchnorm_checked(self.eval(), self.input_size, device).layers
        return self

    def train(self, mode: bool = True) -> "FeatureLayers":
        return super().train(False)  # BatchNorm statistics stay the classifier's

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.features == "pooled":
            return self.layers[0](z)
        maps = []
        for i, layer in enumerate(self.layers):
            z = layer(z)
            if i in self.taps:
                maps.append(z)
        return tap_statistics(maps)
