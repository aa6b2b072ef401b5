"""Peer detectors: other ways to flag unfit inputs on the same groups, for comparison with the
fit-for-task detector at the same false-alarm rate. Today: Feature Squeezing (Xu et al., NDSS 2018).

Each peer gives a score per image (higher = more likely not fit; NaN = unusable) and a rates table
with the columns of ``evaluation.rates_at_false_alarm``, so ``pd.concat`` of both compares them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from iqalib import evaluation, features

__all__ = ["feature_squeezing_scores", "feature_squeezing_rates"]


def feature_squeezing_scores(classifier: Any, images: Sequence[Any], *, bit_depth: int = 5,
                             median_size: int = 2, batch_size: int = 32, min_side: int = 1,
                             plain_proba: np.ndarray | None = None, progress: bool = True) -> np.ndarray:
    """Feature squeezing (Xu et al., NDSS 2018) score per image, in [0, 2]; NaN for unusable inputs.

    max over squeezers of the L1 distance between the classifier's softmax on its view of the
    image and on the squeezed view: colour depth reduced to ``bit_depth`` bits, and a
    ``median_size``×``median_size`` median filter (scipy, reflect padding as in Xu et al.; Pillow's
    MedianFilter only takes odd sizes). Squeezing acts on the network's input pixels. ``images``:
    PIL images or paths; ``plain_proba``: (N, 1000) softmax of the unsqueezed images when already
    known (e.g. from the embedding cache), which saves one of the three passes; ``progress``: a tqdm
    bar over batches.
    """
    from scipy.ndimage import median_filter

    loaded, _ = features.load_inputs(images, min_side)
    out = np.full(len(loaded), np.nan)
    ok = [i for i, im in enumerate(loaded) if im is not None]
    levels = 2 ** bit_depth - 1
    for start in tqdm(range(0, len(ok), batch_size), desc="feature squeezing", disable=not progress, leave=False):
        idx = ok[start : start + batch_size]
        view = np.stack([np.asarray(classifier.view(loaded[i]), dtype=np.uint8) for i in idx])  # (N, S, S, 3)
        depth = np.round(np.round(view / 255.0 * levels) / levels * 255.0).astype(np.uint8)
        median = median_filter(view, size=(1, median_size, median_size, 1), mode="reflect")
        # The squeezed views go through the same backbone pass as every other image (features).
        arrays = (depth, median) if plain_proba is not None else (view, depth, median)
        squeezed = [[Image.fromarray(a) for a in batch] for batch in arrays]
        p = [features.predict(classifier, s, batch_size=batch_size).proba for s in squeezed]
        if plain_proba is not None:
            p.insert(0, np.asarray(plain_proba, np.float32)[idx])
        out[idx] = np.maximum(np.abs(p[0] - p[1]).sum(1), np.abs(p[0] - p[2]).sum(1))
    return out


def feature_squeezing_rates(scores_df: pd.DataFrame, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                            target_fpr: float = 0.05, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Detection rate per group of feature squeezing at ``target_fpr`` false alarms, by the rule of
    ``evaluation.peer_rates``: each split's threshold set on the originals of its training half,
    the rows not in it judged (feature squeezing trains nothing; this makes both methods see the
    same images and choose their operating point on the same photos). ``scores_df``: ``group``,
    ``source_id`` and ``score`` (NaN = unusable = flagged). Columns as
    ``evaluation.rates_at_false_alarm`` with method 'feature_squeezing'."""
    return evaluation.peer_rates(scores_df, "feature_squeezing", target_fpr, splits, n_boot=n_boot, seed=seed)
