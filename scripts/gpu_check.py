"""The first thing to run on a GPU machine (``make gpu-check``): the rehearsal of paper.yaml on CUDA
in fp32 and with ``amp`` (bf16 autocast + channels-last), the robust models of notebook 05 on CUDA
with them, their timings, the largest difference between the fp32 and amp tables, and the
paper-scale cost sheet with the GPU's own unit costs.

    .venv/bin/python scripts/gpu_check.py [--scratch DIR] [--size ci|full]

Nothing in the project depends on it; it needs a CUDA device and says so when there is none.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def table_differences(a: Path, b: Path) -> pd.DataFrame:
    """Per table present in both runs: the largest absolute difference over numeric cells."""
    rows = []
    for file in sorted(a.glob("*.csv")):
        other = b / file.name
        if not other.exists():
            continue
        x, y = pd.read_csv(file), pd.read_csv(other)
        if x.shape != y.shape:
            rows.append({"table": file.stem, "max_abs_diff": np.nan, "note": f"shapes {x.shape} vs {y.shape}"})
            continue
        numeric = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and pd.api.types.is_numeric_dtype(y[c])
                   and not c.endswith("seconds_per_image")]
        diff = max((np.nanmax(np.abs(x[c].to_numpy(float) - y[c].to_numpy(float)), initial=0.0) for c in numeric),
                   default=0.0)
        rows.append({"table": file.stem, "max_abs_diff": float(diff), "note": ""})
    return pd.DataFrame(rows).sort_values("max_abs_diff", ascending=False)


def main(argv: list[str] | None = None) -> int:
    import torch

    import rehearse_paper

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/iqalib-gpu-check"))
    parser.add_argument("--size", default="ci")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check", file=sys.stderr)
        return 2
    print(f"gpu-check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    runs = {}
    for name, amp in (("fp32", False), ("amp", True)):
        out = args.scratch / f"outputs_{name}"
        code = rehearse_paper.main(["--scratch", str(args.scratch), "--size", args.size, "--device", "cuda",
                                    "--outputs", str(out), "--fresh", *(["--amp"] if amp else [])])
        if code:
            print(f"gpu-check: the {name} rehearsal failed (exit {code})", file=sys.stderr)
            return code
        runs[name] = out / "paper"
    for name, folder in runs.items():
        times = json.loads((folder / "manifest.json").read_text())["wall_time_s"]
        print(f"gpu-check: {name} notebooks: " + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in times.items()))
    diffs = table_differences(runs["fp32"] / "tables", runs["amp"] / "tables")
    print("gpu-check: largest |fp32 - amp| per table (rehearsal size, random weights):")
    print(diffs.head(15).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
