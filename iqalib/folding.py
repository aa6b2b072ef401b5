"""BatchNorm folded into the convolution before it, for networks frozen in eval mode (the
classifier's backbone, the DMS denoiser as deployed): each BatchNorm is then an affine map the
convolution's weights and bias carry, and its own passes over the activations go. Checked against
the unfolded network on a probe; knows nothing of classifiers, quality or params.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["batchnorms", "fold_batchnorm", "fold_batchnorm_checked"]


def batchnorms(network: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of ``network`` (torch's, any dimension, and subclasses such as timm's
    BatchNormAct2d): what is left unfolded."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _batchnorm_after(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm`` is a plain BatchNorm (torch's, or timm's BatchNormAct2d) with running
    statistics that can fold into ``conv``."""
    plain = type(norm) is nn.BatchNorm2d or type(norm).__name__ == "BatchNormAct2d"
    return (isinstance(conv, nn.Conv2d) and plain and norm.running_mean is not None
            and norm.num_features == conv.out_channels)


def fold_batchnorm(network: nn.Module) -> int:
    """In place, for a network frozen in eval mode: every BatchNorm registered right after a
    convolution in the same parent (``conv1, bn1``; timm's ``conv_pw, bn1``) is folded into that
    convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by what it applied
    after normalising (timm's BatchNormAct2d: its dropout and activation; torch's: nothing).
    Returns how many were folded. Registration order is not call order in every network, so
    callers check the outputs (``fold_batchnorm_checked``).

    Why by hand: torch.ao's ``fuse_modules`` needs every pair's name per architecture and replaces
    timm's BatchNormAct2d, activation included, by an identity."""
    folded = 0
    for parent in list(network.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if conv is None or norm is None or not _batchnorm_after(conv, norm):
                continue
            parent._modules[first] = fuse_conv_bn_eval(conv.eval(), norm.eval())
            after = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None))
                     if m is not None and not isinstance(m, nn.Identity)]
            parent._modules[second] = after[0] if len(after) == 1 else nn.Sequential(*after) if after else nn.Identity()
            folded += 1
    return folded


def fold_batchnorm_checked(backbone: nn.Module, input_size: int, device: torch.device,
                           tolerance: float = 1e-4) -> nn.Module:
    """A copy of ``backbone`` (frozen, eval mode) with ``fold_batchnorm`` applied, if on a seeded
    probe it gives the same output up to ``tolerance`` relative to the output's scale; else
    ``backbone`` itself, unfolded, and a warning saying so."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules()):
        return backbone
    folded = copy.deepcopy(backbone)
    probe = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():  # not inference mode: the folded weights must serve gradient passes too
        fold_batchnorm(folded)
        before, after = backbone(probe), folded(probe)
    error = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if error > tolerance:
        warnings.warn(f"folding BatchNorm into the convolutions changed {type(backbone).__name__}'s output by "
                      f"{error:.1e} (relative); it runs unfolded")
        return backbone
    return folded
