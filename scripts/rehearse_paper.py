"""Rehearse ``params/paper.yaml`` end to end on a miniature of the real data (``make rehearse``).

    .venv/bin/python scripts/rehearse_paper.py [--size ci|full] [--scratch DIR] [--device cpu|cuda] [--amp]

Writes into ``--scratch`` (default ``/tmp/iqalib-rehearsal``): ImageNet val in both layouts, TID2013,
CSIQ and LIVE in their official formats, torchvision checkpoints of ResNet-152, AlexNet and VGG16
with random weights under their official names (``iqalib.rehearsal``), and ``params/paper.yaml``
with only its sizes changed. Then it runs every notebook 00-05 through the command a user types,
``python -m iqalib run <scratch>/paper.yaml``, with the data given by the documented environment
variables (IQALIB_TID2013, IQALIB_CSIQ, IQALIB_LIVE, IQALIB_IMAGENET_VAL, TORCH_HOME), checks
that each notebook took paper.yaml's code paths, and prints what each stage cost and what it
projects to at paper scale (``scripts/paper_costs.py`` holds the arithmetic).

The rendered notebooks land in ``<scratch>/outputs/paper/``. Their numbers mean nothing: random
weights, made-up scores, a dozen photos.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iqalib import images, rehearsal  # noqa: E402


def expected_paths(paper: dict) -> dict[str, dict[str, object]]:
    """What each notebook's manifest entry must show it took: paper.yaml's code paths."""
    q, uap, denoiser = paper["quality"], paper["attacks"]["uap"], paper["robust"]["denoiser"]
    sets = [e["name"] for e in paper["iqa_sets"]]
    return {
        "00_train_quality_model": {"classifier": paper["classifier"], "quality_features": q["features"],
                                   "quality_hidden": q["hidden"], "iqa_sets": sets, "quality_trained_on": q["train_sets"]},
        "01_quality_vs_accuracy": {"table1_classifiers": paper["classifiers_table1"], "iqa_sets": sets,
                                   "originals": paper["originals"]["source"]},
        "02_adversarial_quality": {"uap_method": uap["method"], "uap_pool": uap["pool"], "originals": paper["originals"]["source"]},
        "04_detector": {"classifier": paper["classifier"]},
        "05_robust_quality": {"quality_features": q["features"], "nt_own_layers": q["features"],
                              "denoiser": f"DnCNN, {denoiser['layers']} layers of {denoiser['channels']} channels"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(rehearsal.SIZES), default="ci")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/iqalib-rehearsal"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--amp", action="store_true", help="backbone passes under bf16 autocast (CUDA)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks (default: all)")
    parser.add_argument("--fresh", action="store_true", help="delete the scratch folder's outputs first")
    parser.add_argument("--outputs", type=Path, help="where the run goes (default: <scratch>/outputs)")
    parser.add_argument("--no-costs", action="store_true", help="skip the paper-scale cost sheet")
    args = parser.parse_args(argv)

    scratch = args.scratch.resolve()
    outputs = (args.outputs or scratch / "outputs").resolve()
    if args.fresh and outputs.exists():
        shutil.rmtree(outputs)
    params = rehearsal.rehearsal_params(args.size, outputs, device=args.device, amp=args.amp)
    started = time.perf_counter()
    written = rehearsal.write_data(scratch, args.size, params)
    data_s = time.perf_counter() - started
    outputs.mkdir(parents=True, exist_ok=True)
    params_file = outputs / "paper.yaml"
    params_file.write_text("# params/paper.yaml with the rehearsal's sizes (iqalib.rehearsal.SIZES)\n"
                           + yaml.safe_dump(params, sort_keys=False))
    flat = images.originals("imagenet_val", written["flat_val"], progress=False)
    assert [r.label for r in flat.records] == [row["true_label"] for row in sorted(written["val"], key=lambda r: r["val_name"])], \
        "the flat ImageNet val layout did not read back with the official labels"
    print(f"[rehearse] data and checkpoints in {scratch} ({data_s:.0f} s); flat val layout reads "
          f"{len(flat.records)} photos with their official labels")

    env = {**os.environ, **written["env"], "PYTHONPATH": str(REPO), "IQALIB_REHEARSAL": "1"}  # captions say so
    command = [sys.executable, "-m", "iqalib", "run", str(params_file), *(["--only", *args.only] if args.only else [])]
    print("[rehearse] " + " ".join(f"{k}={v}" for k, v in written["env"].items()) + " \\\n    " + " ".join(command))
    done = subprocess.run(command, env=env, cwd=REPO)
    if done.returncode:
        print(f"[rehearse] the run failed (exit {done.returncode}); its log is under {outputs / 'paper'}", file=sys.stderr)
        return done.returncode
    manifest = json.loads((outputs / "paper" / "manifest.json").read_text())
    problems = check_paths(manifest, expected_paths(rehearsal.paper_params()))
    for line in problems:
        print(f"[rehearse] code path not taken: {line}", file=sys.stderr)
    for notebook, paths in manifest.get("code_paths", {}).items():
        seconds = manifest["wall_time_s"].get(notebook)
        print(f"[rehearse] {notebook} ({seconds} s at rehearsal size): " + "; ".join(f"{k} {v}" for k, v in paths.items()))
    print(f"[rehearse] rendered: {', '.join(manifest['wall_time_s'])} -> {outputs / 'paper' / 'index.html'}")
    if not args.no_costs:
        import paper_costs

        print("[rehearse] paper-scale cost sheet (scripts/paper_costs.py):")
        over = paper_costs.main(["--device", "cuda" if args.device == "cuda" else "cpu", *(["--amp"] if args.amp else []),
                                 "--json", str(outputs / "paper" / "paper_costs.json")])
        problems += ["a stage over 30 minutes"] if over else []
    return 1 if problems else 0


def check_paths(manifest: dict, expected: dict[str, dict[str, object]]) -> list[str]:
    """One line per expected code path a rendered notebook's manifest entry does not show (a text
    entry counts when it starts with the expected value, e.g. 'originals_rest (3 images)')."""
    taken, out = manifest.get("code_paths", {}), []
    for notebook, paths in expected.items():
        if notebook not in manifest.get("wall_time_s", {}):
            continue
        for key, value in paths.items():
            got = taken.get(notebook, {}).get(key)
            if not (got == value or (isinstance(got, str) and isinstance(value, str) and got.startswith(value))):
                out.append(f"{notebook}: {key} is {got!r}, paper.yaml selects {value!r}")
    return out


if __name__ == "__main__":
    sys.exit(main())
