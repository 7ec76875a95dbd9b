"""Time and peak memory of `rys-search export`, without and with verification.

    python benchmarks/export_cost.py --model qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
        --schedule 0-9,10-13x2,14-27 --format gguf

Each export runs as its own process (`rys-search export ... --json`); its wall time and
peak resident memory (the child's ru_maxrss) are printed, with the verification figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def run(args: list[str]) -> tuple[float, float, list[dict]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rys_search.cli", *args, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"export failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--schedule", default="0-9,10-13x2,14-27")
    parser.add_argument("--format", default="gguf")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as out:
        base = ["export", "--model", args.model, "--schedule", args.schedule, "--format", args.format, "--out", out]
        seconds, peak, (result,) = run(base + ["--no-verify"])
        print(f"write only     {seconds:7.1f} s  peak RSS {peak:7.0f} MiB  {result['bytes'] / 2**20:.0f} MiB written "
              f"({result['written_as']})")
        seconds, peak, (result,) = run(base + ["--force"])
        v = result["verification"]
        print(f"with verify    {seconds:7.1f} s  peak RSS {peak:7.0f} MiB  (verification {result['verify_seconds']:.1f} s)")
        t = v["transformers"]
        print(f"  transformers  max |logit diff| {t['max_abs_logit_diff']:.3g} (tolerance {t['tolerance']:.3g}), "
              f"top-1 agreement {t['top1_agreement']:.3f} over {t['positions']} positions")
        if "llama_cpp" in v:
            c = v["llama_cpp"]
            print(f"  llama.cpp     {c['greedy_tokens_checked']} greedy positions: {c['mismatches']} mismatches, "
                  f"{c['near_tie_flips']} flips at {c['near_ties']} near ties (gap < {c['near_tie_margin']})")


if __name__ == "__main__":
    main()
