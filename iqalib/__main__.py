"""Command line: ``python -m iqalib run PARAMS [--only NN ...] [--shard K/N]``,
``python -m iqalib site RUN_FOLDER`` and ``python -m iqalib check-images DIR [--json | --verbose]``."""
from __future__ import annotations

import argparse
import json
import logging
import sys


def _check_images(args: argparse.Namespace) -> int:
    from iqalib.images import check_images

    progress = not args.json
    try:
        counts = check_images(args.folder, progress=progress)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if progress:
        print(file=sys.stderr, flush=True)  # the summary starts on its own line, below the progress bar
    if args.json:
        print(json.dumps({"used": counts["used"], "skipped": counts["skipped"]}, sort_keys=True))
        return 0
    print(f"{args.folder}: {counts['used']} usable image(s)")
    for reason, n in counts["skipped"].items():
        print(f"  skipped {n:6d}  {reason}")
    if args.verbose and counts.get("skipped_files"):
        print("skipped files:")
        for path, reason in counts["skipped_files"]:
            print(f"  {reason:14s}  {path}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 0 <= K < N, e.g. 0/8; got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard takes K/N with 0 <= K < N, e.g. 0/8; got {text!r}")
    return k, n


def _run(args: argparse.Namespace) -> int:
    from iqalib.params import ParamsError
    from iqalib.runner import NotebookFailed, notebooks, prefill, run

    logging.basicConfig(level=logging.INFO, format="[iqalib] %(message)s", stream=sys.stderr)
    logging.getLogger("papermill").setLevel(logging.INFO if args.log_output else logging.WARNING)
    if args.shard is not None:
        try:
            counts = prefill(args.params, *args.shard)
        except (ParamsError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"[iqalib] share {args.shard[0]}/{args.shard[1]} in the store: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    try:
        ran = [p.stem for p in notebooks(args.only)]
        manifest = run(args.params, only=args.only, log_output=args.log_output)
    except (ParamsError, FileNotFoundError, ValueError, NotebookFailed) as exc:  # PreflightError is a FileNotFoundError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = sum(manifest["wall_time_s"].get(stem, 0.0) for stem in ran)
    print(f"[iqalib] {manifest['run_name']}: ran {len(ran)} notebook(s) in {seconds:.0f} s "
          f"-> {manifest['params']['outputs_dir']}/{manifest['run_name']}/index.html")
    return 0


def _site(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iqalib.book import build

    logging.basicConfig(level=logging.INFO, format="[iqalib] %(message)s", stream=sys.stderr)
    folder = Path(args.folder)
    if not (folder / "manifest.json").is_file():
        print(f"error: {folder} is not a run folder (no manifest.json); run `python -m iqalib run PARAMS` first",
              file=sys.stderr)
        return 2
    print(f"[iqalib] site -> {build(folder)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iqalib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="render the notebooks headlessly with a params file")
    run.add_argument("params", help="params YAML, e.g. params/default.yaml")
    run.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks, e.g. --only 01")
    run.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    run.add_argument("--shard", type=_shard, metavar="K/N",
                     help="no notebooks: fill the run's embedding store with share K of N of the bulk passes "
                          "(IQA sets, originals, distorted images), e.g. one Slurm array task each; then run "
                          "without --shard on the merged store")
    site = sub.add_parser("site", help="(re)build a run folder's results site from its executed notebooks")
    site.add_argument("folder", help="the run folder, e.g. outputs/default")
    check = sub.add_parser("check-images", help="how many images in a folder are usable, and why others are skipped")
    check.add_argument("folder")
    mode = check.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help='print {"used": N, "skipped": {reason: n}}')
    mode.add_argument("--verbose", "-v", action="store_true", help="also list every skipped file with its reason")
    args = parser.parse_args(argv)
    return {"check-images": _check_images, "site": _site}.get(args.command, _run)(args)


if __name__ == "__main__":
    sys.exit(main())
