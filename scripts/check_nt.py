"""Independent check of notebook 05's NT model, written outside iqalib: an I-FGSM of our own
(10 steps, eps 4/255, step 1/255, raising and lowering the score) through ``robust.score_fn`` of the
SAVED plain and NT models, on held-out photos; prints the mean score change of each, NT's
reduction with a paired bootstrap interval over the photos, and clean held-out SROCC of both. The
reduction is measured two ways: both directions on every photo (the issue's goal), and by NT's
authors' rule (YangiD/DefenseIQA-NT, FGSM_demo.py: a score above the middle of the scale is
lowered, one below it raised, each model by its own clean score), and by the attack the authors'
demo runs by default (one sign step of 0.01 on [0, 1] pixels, 2.55/255, by the same rule). Beside them, what NT's penalty
acts on: the first-order change eps * ||grad f||_1 at the clean photos and a single FGSM step of
size eps (up, down), to tell how far from linear the score is at this radius; and how far the
attack took each model's scores (to the highest or lowest score it reached, and how much of the
room to it its progress used). ``--probe STEPS`` adds attacks that keep their best iterate (inside
the same ball and inside 16/255), to find where each model's score ends independently of the
10-step attack, measures that attack's progress against those ends, and gives NT's cut under the
stronger attack inside 4/255 with its interval.

    python scripts/check_nt.py [params/default.yaml] [--images 24] [--probe 40]

Needs notebook 05 rendered with those params (its models under outputs/<run>/models/).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import stats

from iqalib import experiment, metrics, robust
from iqalib import robust_experiment as rx
from iqalib.quality import QualityModel


def our_ifgsm(score, x: torch.Tensor, eps: float, step: float, iters: int, sign: int,
              seen: list[np.ndarray] | None = None) -> torch.Tensor:
    """The last point of ``iters`` sign steps of ``step`` inside the l-inf ball of ``eps``; ``seen``
    collects the scores of every point a step starts from (from the pass its gradient needs)."""
    adv = x.clone()
    for _ in range(iters):
        adv.requires_grad_(True)
        scores = score(adv)
        grad, = torch.autograd.grad(scores.sum(), adv)
        if seen is not None:
            seen.append(scores.detach().numpy())
        with torch.no_grad():
            adv = adv + sign * step * torch.nan_to_num(grad).sign()
            adv = x + (adv - x).clamp(-eps, eps)
            adv = adv.clamp(0, 1)
    return adv.detach()


def attacked_scores(score, x: torch.Tensor, eps: float = 4 / 255, step: float = 1 / 255,
                    iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the score after ``our_ifgsm`` raising it, then after lowering it."""
    up, down = (score(our_ifgsm(score, x, eps, step, iters, sign)).detach().numpy() for sign in (1, -1))
    return up, down


def score_changes(score, x: torch.Tensor, eps: float = 4 / 255, step: float = 1 / 255,
                  iters: int = 10, clean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image, |Δs| under ``our_ifgsm`` raising the score, then lowering it (``clean``: the
    scores of ``x``, when the caller has them)."""
    if clean is None:
        with torch.no_grad():
            clean = score(x).numpy()
    up, down = attacked_scores(score, x, eps, step, iters)
    return np.abs(up - clean), np.abs(down - clean)


def best_ifgsm(score, x: torch.Tensor, eps: float, step: float, iters: int, sign: int) -> np.ndarray:
    """Per image, the best score (highest when raising, lowest when lowering) over every point of
    ``our_ifgsm``: an attack that keeps its best point, so a step that overshoots costs it nothing."""
    seen: list[np.ndarray] = []
    last = our_ifgsm(score, x, eps, step, iters, sign, seen)
    with torch.no_grad():
        seen.append(score(last).numpy())
    return np.max(seen, axis=0) if sign > 0 else np.min(seen, axis=0)


def reach(clean: np.ndarray, up: np.ndarray, down: np.ndarray, tol: float = 0.05,
          ends: tuple[float, float] | None = None) -> str:
    """How far the attacks took the scores: the highest score the raising attack reached on these
    photos (the lowest, for the lowering one; ``ends``: the highest and lowest found by any attack
    instead), the share of photos within ``tol`` of it, the share of the room from the clean scores
    to it that the attack's progress used (a move against the attack's direction counts as none,
    where |Δs| counts it as change), and the photos moved the wrong way."""
    parts = []
    for label, attacked, sign in (("raising", up, 1), ("lowering", down, -1)):
        extreme = sign * (sign * attacked).max() if ends is None else ends[0 if sign > 0 else 1]
        moved = sign * (attacked - clean)
        room = np.clip(sign * (extreme - clean), 0, None).mean()
        used = np.clip(moved, 0, None).mean() / room if room > 0 else float("nan")
        parts.append(f"{label}: {'highest' if sign > 0 else 'lowest'} {extreme:.3f}, "
                     f"{np.mean(np.abs(attacked - extreme) <= tol):.0%} of photos within {tol} of it, "
                     f"{used:.0%} of the room used, {np.mean(moved < 0):.0%} the wrong way")
    return "; ".join(parts)


def first_order_slope(score, x: torch.Tensor) -> np.ndarray:
    """Per image, ||grad f(x)||_1 (what NT's finite difference estimates): eps times it is the score
    change a linear model would predict for an l-inf step of size eps along sign(grad)."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(score(x).sum(), x)
    return grad.abs().flatten(1).sum(1).numpy()


def toward_middle(clean: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Per photo, the change by NT's authors' direction rule: lowered above the middle, raised below
    (the scores lie in (0, 1): 0.5 is the authors' "50")."""
    return np.where(clean > 0.5, down, up)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", nargs="?", default="params/default.yaml")
    ap.add_argument("--images", type=int, default=24, help="held-out photos attacked (seeded sample)")
    ap.add_argument("--probe", type=int, default=0, metavar="STEPS",
                    help="also attack keeping the best iterate, STEPS steps of 0.5/255 inside 4/255 and of 1/255 "
                         "inside 16/255, to find where each model's score ends (0: off)")
    args = ap.parse_args()
    run = experiment.open_run(args.params)
    data = rx.robust_data(run)
    held = data.held.sample(n=min(args.images, len(data.held)), random_state=12345).reset_index(drop=True)
    x = rx.view_tensor(run, list(held["path"]))
    srocc_x = rx.view_tensor(run, list(data.srocc["path"]))
    change, authors, demo, srocc, cleans, strong = {}, {}, {}, {}, {}, {}
    for name, folder in (("plain", rx.ROBUST_PLAIN_FOLDER), ("nt", rx.ROBUST_NT_FOLDER)):
        model = QualityModel.load(run.folder / folder, device="cpu")
        score = robust.score_fn(model, run.classifier)
        with torch.no_grad():
            srocc[name] = float(stats.spearmanr(score(srocc_x).numpy(), data.srocc["mos"]).statistic)
            clean = score(x).numpy()
        up_scores, down_scores = attacked_scores(score, x)
        up, down = np.abs(up_scores - clean), np.abs(down_scores - clean)
        change[name], cleans[name] = (up + down) / 2, clean
        authors[name] = toward_middle(clean, up, down)
        print(f"{name:6s} mean |Δs| up {up.mean():.4f} down {down.mean():.4f} mean {change[name].mean():.4f}; "
              f"clean SROCC {srocc[name]:.3f} on {len(srocc_x)} held-out images; own layers: {model.has_own_layers}")
        print(f"{name:6s} {reach(clean, up_scores, down_scores)}")
        if args.probe:
            # stronger attacks that keep their best point: half the step inside the same ball, and
            # steps of 1/255 inside a 4x wider one, to find where each model's score ends
            probes = {f"{e * 255:g}/255": [best_ifgsm(score, x, e, st, args.probe, sign) for sign in (1, -1)]
                      for e, st in ((4 / 255, 0.5 / 255), (16 / 255, 1 / 255))}
            ends = (max(up_scores.max(), *(p[0].max() for p in probes.values())),
                    min(down_scores.min(), *(p[1].min() for p in probes.values())))
            hi, lo = probes["4/255"]
            strong[name] = (np.abs(hi - clean) + np.abs(lo - clean)) / 2
            for label, (hi, lo) in probes.items():
                print(f"{name:6s} probe at {label}, best of {args.probe} steps: mean |Δs| up {np.abs(hi - clean).mean():.4f} "
                      f"down {np.abs(lo - clean).mean():.4f}; {reach(clean, hi, lo, ends=ends)}")
            print(f"{name:6s} ends found by any attack: {ends[0]:.3f} / {ends[1]:.3f}; the 10-step attack against "
                  f"them: {reach(clean, up_scores, down_scores, ends=ends)}")
        first_order = 4 / 255 * first_order_slope(score, x)
        one_up, one_down = score_changes(score, x, step=4 / 255, iters=1, clean=clean)
        print(f"{name:6s} first order: eps*||grad f||_1 {first_order.mean():.3f}; one FGSM step up {one_up.mean():.4f} "
              f"down {one_down.mean():.4f}")
        # the authors' own attack as their demo runs it by default (FGSM_demo.py: --step 1, --alp 0.01,
        # --eps 0.03 on [0, 1] pixels): ONE sign step of 0.01 (2.55/255), toward the middle of the scale
        demo_up, demo_down = score_changes(score, x, eps=0.03, step=0.01, iters=1, clean=clean)
        demo[name] = toward_middle(clean, demo_up, demo_down)
        print(f"{name:6s} the authors' demo attack (one step of 0.01 toward the middle): mean |Δs| {demo[name].mean():.4f} "
              f"({(clean > 0.5).sum()} of {len(clean)} photos lowered)")

    def cut(nt, plain, axis=-1):
        return 1 - nt.mean(axis) / plain.mean(axis)

    # the project's interval procedure (notebook 05's robust_change_cut uses it too): the cut on
    # resampled photos, paired, so a photo's change under both models travels together
    for label, measured in (("both directions", change), ("the authors' rule", authors),
                            ("the authors' demo attack (one step)", demo),
                            *([(f"the probe at 4/255 (best of {args.probe} steps), both directions", strong)]
                              if strong else [])):
        low, high = metrics.bootstrap_ci((measured["nt"], measured["plain"]), cut, n_boot=2000)
        print(f"{label}: NT moves the score {cut(measured['nt'], measured['plain']):.1%} less than plain (mean |Δs| "
              f"{measured['plain'].mean():.4f} -> {measured['nt'].mean():.4f}; 95 % bootstrap interval over the photos "
              f"{low:.1%} to {high:.1%}; goal >= 30 %)")
    # the same, each model's change in units of its own clean scores' spread on these photos: a model
    # that squeezes its scores together moves them less without ranking them any more stably
    def per_spread(nt, plain, nt_clean, plain_clean, axis=-1):
        return 1 - (nt.mean(axis) / nt_clean.std(axis, ddof=1)) / (plain.mean(axis) / plain_clean.std(axis, ddof=1))

    paired = (change["nt"], change["plain"], cleans["nt"], cleans["plain"])
    low, high = metrics.bootstrap_ci(paired, per_spread, n_boot=2000)
    print(f"both directions, per spread: {per_spread(*paired):.1%} less (clean-score std NT "
          f"{cleans['nt'].std(ddof=1):.3f}, plain {cleans['plain'].std(ddof=1):.3f}; 95 % interval {low:.1%} to {high:.1%})")
    print(f"SROCC difference {srocc['nt'] - srocc['plain']:+.3f} (goal within 0.05); {len(x)} attacked held-out photos")


if __name__ == "__main__":
    main()
