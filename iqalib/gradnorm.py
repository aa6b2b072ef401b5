"""NT (Liu et al., CVPR 2024), gradient-norm regularised training of a quality model's own copy of
the backbone's feature layers and its heads, and what NT's finite difference measures on a score
(the gradient's ℓ1 norm against the rise over one sign step). The classifier is never trained:
the gradient flows through the quality model's copy (``iqalib.feature_layers``).

Images are float tensors in [0, 1], (N, 3, H, W); NT's step ``h`` is in the network's input units
(``input_unit``). Knows nothing of params or notebooks.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from iqalib.classifiers import Classifier
from iqalib.folding import batchnorms
from iqalib.quality import QualityModel
from iqalib.robust import BATCH, Score

__all__ = ["train_nt", "input_unit", "sign_step_rises"]


def train_nt(plain: QualityModel, classifier: Classifier, views: torch.Tensor, mos: np.ndarray,
             lam: float = 1e-3, h: float = 1e-2, steps: int = 120, batch_size: int = 16, lr: float = 1e-4,
             layer_lr: float = 1e-5, seed: int = 0, progress: bool = True,
             difference: str = "forward", batchnorm: str = "frozen",
             heads: str = "plain", around: float = 0.0) -> tuple[QualityModel, list[dict]]:
    """A copy of ``plain`` with its own copy of the backbone's early layers
    (``QualityModel.attach_own_layers``), whose layers and heads are fine-tuned with NT's loss;
    returns it and a per-step log (DataFrame-ready dicts: step, l1, penalty, grad_l1).

    The authors' form (YangiD/DefenseIQA-NT): on a batch of images x in the normalised input space,
    g = ∂f/∂x, v = sign(g) detached, dl = (f(x + h v) − f(x)) / h (≈ ‖g‖₁, gradients through both
    passes), loss = L1(f(x), MOS) + λ mean(dl²) / 2. ``difference="two_sided"`` (ours, not the
    authors'): the mean of dl² and of the backward difference's (f(x) − f(x − h v)) / h squared, so
    the slope that LOWERS the score is penalised too; the forward difference alone measures the
    slope that raises it, and beyond first order the two differ. The penalty is on the ensemble mean (the
    deployed score); the L1 term is each head's, averaged, so every head stays a predictor of its
    own. ``views``: ``batch_size`` images per step drawn from these training images (classifier
    view, [0, 1]) with their ``mos``. AdamW, heads at ``lr`` and the copied layers at ``layer_lr``
    (the authors train the backbone 10x slower than the head), cosine-annealed over ``steps``. The
    classifier is never touched: the gradient flows through the copy only.

    ``batchnorm``: ``"frozen"``, a folded copy (each BatchNorm an affine map in its convolution,
    whichever classifier is given); ``"train"``, as the authors train HyperIQA: the copy's BatchNorm normalises
    by each batch's statistics (every pass, the perturbed ones too) and updates its running ones,
    which are folded into the convolutions once training ends, so the saved model has the frozen
    form's layout. Needs a classifier loaded with ``fold_batchnorm=False``.

    ``heads``: ``"plain"`` (ours), NT fine-tunes ``plain``'s trained heads; ``"fresh"``, as the authors
    train (NT from the start, not after a plain training): each head's weights drawn afresh (head k
    from seed ``seed * 1000 + k``; ``plain``'s feature standardisation kept) and learnt with the
    layers under the penalty — many more steps than fine-tuning needs.

    ``around`` (ours, not the authors'): an ℓ∞ radius in [0, 1] pixels. Above 0, the difference (and
    the sign(∇f) it steps along) is taken at x + u, u uniform in [−around, around] per pixel, clamped
    to [0, 1] — a point an attack of that radius can reach — instead of at x itself (the log's ``grad_l1`` too); the L1
    term stays on x. A multi-step attack leaves x at once, and the penalty at x alone flattens only x's own
    neighbourhood (``README``, NT's sweep). 0: at x, as the authors. The shift is drawn from the same
    seeded stream as the batches, so after the first step the batches differ from ``around=0``'s at
    the same seed; with ``batchnorm="train"`` the pass at the shifted point updates the running
    statistics too."""
    from tqdm.auto import tqdm

    plain.classifier(classifier)  # the one backbone-compatibility check
    if difference not in ("forward", "two_sided"):
        raise ValueError(f"difference must be 'forward' or 'two_sided', got {difference!r}")
    if batchnorm not in ("frozen", "train"):
        raise ValueError(f"batchnorm must be 'frozen' or 'train', got {batchnorm!r}")
    if len(views) != len(mos):
        raise ValueError(f"{len(views)} views but {len(mos)} scores")
    if not (math.isfinite(around) and 0 <= around <= 1):
        raise ValueError(f"around must be a radius >= 0 in [0, 1] pixels, got {around!r}")
    if heads not in ("plain", "fresh"):
        raise ValueError(f"heads must be 'plain' or 'fresh', got {heads!r}")
    model = plain.copy()
    if heads == "fresh":
        for k, head in enumerate(model.heads):
            head.redraw(torch.Generator().manual_seed(int(seed) * 1000 + k))
    layers = model.attach_own_layers(classifier, keep_batchnorm=batchnorm == "train")
    norms = batchnorms(layers)
    if batchnorm == "train":
        if not norms:
            raise ValueError("batchnorm='train' needs the classifier's BatchNorm layers: load it with "
                             "classifiers.load_classifier(..., fold_batchnorm=False)")
        for norm in norms:  # FeatureLayers.train keeps eval mode; only these learn from batches
            torch.nn.Module.train(norm, True)
    heads_params = [q for head in model.heads for q in head.parameters()]
    layer_params = list(layers.parameters())
    for q in heads_params + layer_params:
        q.requires_grad_(True)
    target = torch.from_numpy(np.asarray(mos, np.float32)).to(classifier.device)
    groups = [{"params": heads_params, "lr": lr, "peak": lr}, {"params": layer_params, "lr": layer_lr, "peak": layer_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=plain.weight_decay)
    g = torch.Generator().manual_seed(int(seed))
    log = []
    for step in tqdm(range(steps), desc="NT training", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = 0.5 * group["peak"] * (1.0 + math.cos(math.pi * step / steps))
        pick = torch.randint(0, len(views), (batch_size,), generator=g)
        x = views[pick].to(classifier.device)
        z = classifier.normalize(x * 255.0).requires_grad_(around == 0)  # the gradient is taken at z only then
        each = model.live_scores(layers(z))
        l1 = (each - target[pick.to(target.device)]).abs().mean()
        at, score = z, each.mean(0)
        if around > 0:
            shift = (torch.rand(x.shape, generator=g) * 2 - 1).to(x.device) * around
            at = classifier.normalize((x + shift).clamp(0, 1) * 255.0).requires_grad_(True)
            score = model.live_scores(layers(at)).mean(0)
        grad, = torch.autograd.grad(score.sum(), at, retain_graph=True)
        v = torch.nan_to_num(grad, nan=0.0).sign().detach()
        dl = (model.live_scores(layers(at + h * v)).mean(0) - score) / h
        squared = dl ** 2
        if difference == "two_sided":
            squared = (squared + ((score - model.live_scores(layers(at - h * v)).mean(0)) / h) ** 2) / 2
        penalty = lam * squared.mean() / 2
        opt.zero_grad(set_to_none=True)
        (l1 + penalty).backward()
        opt.step()
        log.append({"step": step, "l1": float(l1.detach()), "penalty": float(penalty.detach()),
                    "grad_l1": float(grad.abs().flatten(1).sum(1).mean())})
    for q in heads_params + layer_params:
        q.requires_grad_(False)
    if norms:  # the running statistics learnt, folded: the layout of a saved model's layers
        layers.fold().requires_grad_(False)
    model.forget_stack()
    return model, log


def input_unit(classifier: Classifier) -> torch.Tensor:
    """Per channel, the step in [0, 1] pixels that one unit of the classifier's network input is
    (its normalisation's std, (1, C, 1, 1)): NT's finite-difference step ``h`` is taken in those units."""
    return torch.tensor(classifier.std, device=classifier.device).view(1, 3, 1, 1)


def sign_step_rises(score: Score, x: torch.Tensor, steps: Sequence[float],
                    unit: torch.Tensor | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """What NT's finite difference measures (``train_nt``): per image, ‖∇f‖₁ at ``x`` and the rise of
    the score over a step of each size in ``steps`` along sign(∇f) at ``x``, (N, len(steps)), both
    per ``unit`` of pixel (``input_unit``: the network's input, as ``train_nt`` steps; 1: [0, 1]
    pixels). Unclamped, as ``train_nt`` steps. rise / step tends to ‖∇f‖₁ as the step shrinks where
    the score is smooth; where the rise has stopped growing, the quotient at that step weighs the
    rise over it rather than the gradient."""
    norms, rises = [], []
    for chunk in x.split(BATCH):
        chunk = chunk.detach().clone().requires_grad_(True)
        clean = score(chunk)
        grad, = torch.autograd.grad(clean.sum(), chunk)
        grad = torch.nan_to_num(grad, nan=0.0)  # a channel with no spread gives no direction (as _ifgsm_step)
        with torch.no_grad():
            step_along = unit * grad.sign()
            norms.append((grad * unit).abs().flatten(1).sum(1))
            rises.append(torch.stack([score(chunk + h * step_along) - clean for h in steps], dim=1))
    return torch.cat(norms).cpu().numpy(), torch.cat(rises).cpu().numpy()
