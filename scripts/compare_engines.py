#!/usr/bin/env python3
"""Measures how far engines and GPU backends differ on the same configuration.

Runs `rankcollapse run ... --sequences-csv` once per engine (cpu-f64, cpu-f32, and the GPU engine
on every adapter index given with --adapters) and prints, per metric, the largest difference of
each against cpu-f64 over every sequence and layer: relative |a - b| / |b| for values,
|a - b| / max(1, |b|) for log10 metrics (their absolute error grows with depth like the value's
relative error times |log|), and |a - b| / sigma_1(A) for attn_sigma2 and attn_centered_sigma1,
which are resolved absolutely (a collapsed A has sigma_2 near zero). Pairs of runs on the same engine and adapter must agree bit for bit
(chunk sizes and thread counts do not change results); that is tested, not measured here.

Usage: scripts/compare_engines.py [--bin target/release/rankcollapse] [--adapters 0,1] -- RUN ARGS
"""
import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile


def run(binary, args, extra, out):
    cmd = [binary, "run", *args, *extra, "--sequences-csv", "--out", out]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    with open(os.path.join(out, "sequences.csv")) as f:
        return list(csv.DictReader(f))


def worst(rows, ref):
    out = {}
    for a, b in zip(rows, ref):
        for k, v in a.items():
            if k in ("sequence", "layer") or v == "" or b[k] == "":
                continue
            x, y = float(v), float(b[k])
            if x == y or not (math.isfinite(x) and math.isfinite(y)):
                continue
            if k in ("attn_sigma2", "attn_centered_sigma1"):
                # Resolved absolutely, to a few ulps of sigma_1(A): near zero once A is rank one.
                scale = float(b["attn_sigma1"])
            elif k.startswith("log10_"):
                scale = max(1.0, abs(y))
            else:
                scale = abs(y)
            d = abs(x - y) / scale if scale > 0 else math.inf
            out[k] = max(out.get(k, 0.0), d)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/rankcollapse")
    p.add_argument("--adapters", default="0", help="GPU adapter indices (rankcollapse devices), '' for none")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = [x for x in a.args if x != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        ref = run(a.bin, args, ["--engine", "cpu", "--precision", "f64"], os.path.join(tmp, "f64"))
        others = {"cpu-f32": run(a.bin, args, ["--engine", "cpu", "--precision", "f32"], os.path.join(tmp, "f32"))}
        for idx in filter(None, a.adapters.split(",")):
            others[f"gpu adapter {idx}"] = run(
                a.bin, args, ["--engine", "gpu", "--adapter", idx], os.path.join(tmp, f"gpu{idx}")
            )
    names = sorted({k for o in others.values() for k in worst(o, ref)})
    print(f"rankcollapse run {' '.join(args)}: largest difference against cpu-f64")
    print(f"{'metric':<24}" + "".join(f"{n:>18}" for n in others))
    diffs = {n: worst(o, ref) for n, o in others.items()}
    for m in names:
        print(f"{m:<24}" + "".join(f"{diffs[n].get(m, 0.0):>18.2e}" for n in others))
    if len(others) > 2:
        gpus = [n for n in others if n.startswith("gpu")]
        between = worst(others[gpus[1]], others[gpus[0]])
        print(f"between {gpus[0]} and {gpus[1]}: " + (", ".join(f"{k} {v:.2e}" for k, v in sorted(between.items())) or "bitwise identical"))


if __name__ == "__main__":
    main()
