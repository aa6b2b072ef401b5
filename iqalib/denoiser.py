"""The denoiser DMS-IQA puts in front of a median-smoothed quality metric: a small DnCNN-style
network (Zhang et al., TIP 2017: conv-ReLU, then conv-BN-ReLU layers, predicting the noise that is
subtracted) trained on photos with Gaussian noise of the smoothing's sigma with MSE
(``train_denoiser``), then fine-tuned with DMS-IQA's rank-preserving loss through the metric it
serves (``train_rank_preserving``: denoised noisy images must keep the order of their clean
scores). Trains, applies, saves and loads; the metric comes in as a function, so this module
knows nothing of quality models or params.

Why by hand: no registry package ships a DnCNN for pixel values in [0, 1] at our sigma that loads
with ``weights_only=True``; the network is twenty lines.
"""
from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from iqalib.cache import atomic_write_bytes, atomic_write_text
from iqalib.folding import fold_batchnorm

__all__ = ["DnCNN", "train_denoiser", "train_rank_preserving", "pair_rank_loss"]

CARD_FORMAT = "iqalib.denoiser/1"


class DnCNN(nn.Module):
    """``layers`` 3×3 convolutions of ``channels`` features; the output is ``x`` minus the predicted
    noise. Input and output: (N, 3, H, W) in [0, 1] (the output is not clamped)."""

    def __init__(self, layers: int = 5, channels: int = 16):
        super().__init__()
        if layers < 2 or channels < 1:
            raise ValueError("a DnCNN needs at least 2 layers and 1 channel")
        self.layers, self.channels = int(layers), int(channels)
        body: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                     nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(channels, 3, 3, padding=1))
        # The last layer starts at zero: an untrained denoiser is the identity, never worse than nothing.
        nn.init.zeros_(body[-1].weight)
        nn.init.zeros_(body[-1].bias)
        self.body = nn.Sequential(*body)
        # Channels-last weights, as the classifier's (its output feeds the classifier): on 2 CPU
        # cores no measurable difference (0.98-1.02x, 5 x 16 at 224 px, benchmarks/bench_robust.py).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)

    def folded(self) -> "DnCNN":
        """A frozen copy for inference and attacks, its BatchNorms folded into the convolutions
        (``folding.fold_batchnorm``): the same function, 1.2x the images a second forward and
        1.7x forward + backward on 2 CPU cores (5 x 16 at 224 px, 16 images,
        benchmarks/bench_robust.py). Not for training: its BatchNorms are gone."""
        net = copy.deepcopy(self).eval()
        fold_batchnorm(net)
        net.card = getattr(self, "card", {})
        return net.to(memory_format=torch.channels_last).requires_grad_(False)

    def save(self, folder: str | Path, card: dict | None = None) -> Path:
        """``denoiser.pt`` (state dict) and ``card.json`` (architecture and ``card``), atomically."""
        folder = Path(folder)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, buffer)
        atomic_write_bytes(folder / "denoiser.pt", buffer.getvalue())
        atomic_write_text(folder / "card.json", json.dumps(
            {"format": CARD_FORMAT, "layers": self.layers, "channels": self.channels, **(card or {})}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "DnCNN":
        """A denoiser written by ``save`` (weights read with ``weights_only=True``), in eval mode."""
        folder = Path(folder)
        card = json.loads((folder / "card.json").read_text())
        if card.get("format") != CARD_FORMAT:
            raise ValueError(f"{folder / 'card.json'}: format {card.get('format')!r}, expected {CARD_FORMAT!r}")
        net = cls(card["layers"], card["channels"])
        net.load_state_dict(torch.load(folder / "denoiser.pt", map_location="cpu", weights_only=True))
        net.card = card
        return net.eval().requires_grad_(False)


def _patches(photos: Sequence[np.ndarray], n: int, size: int, g: np.random.Generator) -> torch.Tensor:
    """``n`` random ``size``² crops (random photo, place, mirror) as (n, 3, size, size) in [0, 1]."""
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        photo = photos[g.integers(len(photos))]
        top, left = g.integers(photo.shape[0] - size + 1), g.integers(photo.shape[1] - size + 1)
        crop = photo[top:top + size, left:left + size]
        out[i] = crop[:, ::-1] if g.random() < 0.5 else crop
    return torch.from_numpy(out / 255.0).permute(0, 3, 1, 2).contiguous()


def _noisy_crops(photos: Sequence[np.ndarray], n: int, size: int, sigma: float, rng: np.random.Generator,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``_patches`` and the same crops plus N(0, sigma²) noise (drawn on the CPU), clamped to [0, 1]."""
    clean = _patches(photos, n, size, rng)
    return clean, (clean + torch.randn(clean.shape, generator=generator) * sigma).clamp(0.0, 1.0)


def train_denoiser(photos: Sequence[np.ndarray], sigma: float, layers: int = 5, channels: int = 16,
                   steps: int = 300, batch_size: int = 32, patch: int = 64, lr: float = 1e-3, seed: int = 0,
                   device: str = "cpu", progress: bool = True) -> tuple[DnCNN, list[dict]]:
    """Train a ``DnCNN`` on random crops of ``photos`` (uint8 H×W×3 arrays, each side ≥ ``patch``)
    plus N(0, sigma²) noise, clamped to [0, 1] as the smoothed scorer clamps it; MSE to the clean
    crop; Adam at ``lr``, cosine-annealed, on ``device`` (noise drawn on the CPU, so any device
    gives the same draws). Returns the network (eval mode, on ``device``) and a per-step log (step,
    mse, noisy_mse: the MSE of the noisy input, i.e. of doing nothing)."""
    from tqdm.auto import tqdm

    photos = [p for p in photos if min(p.shape[:2]) >= patch]
    if not photos:
        raise ValueError(f"no photo has both sides >= {patch} px")
    torch_g = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # nn.Conv2d initialises from the global RNG
        net = DnCNN(layers, channels)
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    log = []
    net.train()
    for step in tqdm(range(steps), desc="denoiser", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
        clean, noisy = _noisy_crops(photos, batch_size, patch, sigma, rng, torch_g)
        clean, noisy = clean.to(device), noisy.to(device)
        loss = ((net(noisy) - clean) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append({"step": step, "mse": float(loss.detach()), "noisy_mse": float(((noisy - clean) ** 2).mean())})
    return net.eval().requires_grad_(False), log


def pair_rank_loss(scores: torch.Tensor, clean: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over all ordered pairs (i, j) with clean[i] > clean[j]: relu(margin − (s_i − s_j)),
    so ``scores`` keep the order of ``clean`` by at least ``margin`` (0 when there is no such pair)."""
    above = clean[:, None] > clean[None, :]
    if not above.any():
        return scores.sum() * 0.0
    gaps = scores[:, None] - scores[None, :]
    return torch.relu(margin - gaps[above]).mean()


def train_rank_preserving(net: DnCNN, photos: Sequence[np.ndarray], views: torch.Tensor,
                          score: Callable[[torch.Tensor], torch.Tensor], sigma: float, steps: int = 60,
                          batch_size: int = 8, rank_weight: float = 1.0, margin: float = 0.01,
                          patch: int = 64, patch_batch: int = 32, lr: float = 1e-4, seed: int = 0,
                          progress: bool = True) -> tuple[DnCNN, list[dict]]:
    """A copy of ``net`` fine-tuned with DMS-IQA's loss: MSE on noisy photo crops (as in
    ``train_denoiser``) + ``rank_weight`` × ``pair_rank_loss`` of the metric on denoised noisy
    ``views`` (N, 3, S, S in [0, 1]: images the metric scores) against the metric's scores of the
    clean views, ``batch_size`` views per step. ``score``: images in [0, 1] -> (N,) scores,
    differentiable (its parameters are not trained). Adam at ``lr``, cosine-annealed; returns the
    network (eval mode) and a per-step log (step, mse, rank, violated: share of pairs out of order)."""
    from tqdm.auto import tqdm

    photos = [p for p in photos if min(p.shape[:2]) >= patch]
    if not photos:
        raise ValueError(f"no photo has both sides >= {patch} px")
    device = next(net.parameters()).device
    with torch.no_grad():
        clean_scores = torch.cat([score(views[i:i + 32].to(device)) for i in range(0, len(views), 32)])
    model = copy.deepcopy(net).requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng, torch_g = np.random.default_rng(seed + 1), torch.Generator().manual_seed(int(seed) + 1)
    log = []
    model.train()
    for step in tqdm(range(steps), desc="rank-preserving denoiser", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
        crops, noisy_crops = _noisy_crops(photos, patch_batch, patch, sigma, rng, torch_g)
        mse = ((model(noisy_crops.to(device)) - crops.to(device)) ** 2).mean()
        pick = torch.from_numpy(rng.choice(len(views), size=min(batch_size, len(views)), replace=False))
        x = views[pick]
        noisy = (x + torch.randn(x.shape, generator=torch_g) * sigma).clamp(0.0, 1.0).to(device)
        scores = score(model(noisy).clamp(0.0, 1.0))
        clean = clean_scores[pick.to(clean_scores.device)]
        rank = pair_rank_loss(scores, clean, margin)
        opt.zero_grad(set_to_none=True)
        (mse + rank_weight * rank).backward()
        opt.step()
        with torch.no_grad():
            above = clean[:, None] > clean[None, :]
            violated = float(((scores[:, None] - scores[None, :])[above] <= 0).float().mean()) if above.any() else 0.0
        log.append({"step": step, "mse": float(mse.detach()), "rank": float(rank.detach()), "violated": violated})
    return model.eval().requires_grad_(False), log
