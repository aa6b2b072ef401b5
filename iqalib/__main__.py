"""Command line: ``python -m iqalib run PARAMS [--only NN ...]`` and ``python -m iqalib check-images DIR [--json]``."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iqalib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="render the notebooks headlessly with a params file")
    run.add_argument("params", help="params YAML, e.g. params/default.yaml")
    run.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks, e.g. --only 01")
    run.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    check = sub.add_parser("check-images", help="how many images in a folder are usable, and why others are skipped")
    check.add_argument("folder")
    check.add_argument("--json", action="store_true", help='print {"used": N, "skipped": {reason: n}}')
    args = parser.parse_args(argv)

    if args.command == "check-images":
        from iqalib.images import check_images

        try:
            counts = check_images(args.folder, progress=not args.json)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(counts, sort_keys=True))
        else:
            print(f"{args.folder}: {counts['used']} usable image(s)")
            for reason, n in counts["skipped"].items():
                print(f"  skipped {n:6d}  {reason}")
        return 0

    from iqalib.params import ParamsError
    from iqalib.runner import NotebookFailed, run as run_notebooks

    try:
        manifest = run_notebooks(args.params, only=args.only, log_output=args.log_output)
    except (ParamsError, FileNotFoundError, ValueError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[iqalib] {manifest['run_name']}: {len(manifest['wall_time_s'])} notebook(s) in "
          f"{sum(manifest['wall_time_s'].values()):.0f} s -> outputs/{manifest['run_name']}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
