"""`archlab experiment all --scale quick`, measured: the wall time and peak memory of the
whole run, and each experiment's verdict, minutes and numbers, in
benchmarks/results/experiments_quick.json (the README's verdict table is read from it).

It runs the real command in a child process (so that the memory measured is the command's,
not this script's) and then reads every experiment's `verdict.json` under --out. An --out
that already holds finished experiments is resumed: those take seconds and keep the minutes
their measurement took (recorded in their verdict.json), and the wall time measured here is
then only the part this run did; `resumed` in the result lists them.

The load average is recorded before and after: on a shared machine the minutes are
pessimistic.

    python benchmarks/experiments_quick.py                        # everything, fresh
    python benchmarks/experiments_quick.py --out /tmp/exps         # resume a stopped run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from archlab.analysis.speed import cpu_name

HERE = Path(__file__).resolve().parent


def finished(out: Path) -> set[str]:
    return {p.parent.name for p in out.glob("*/verdict.json")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("experiments-quick"),
                    help="where the pages go (default experiments-quick/)")
    ap.add_argument("--result", type=Path, default=HERE / "results" / "experiments_quick.json")
    ap.add_argument("--data-root", help="folder holding Fashion-MNIST's files")
    args = ap.parse_args(argv)

    resumed = sorted(finished(args.out)) if args.out.exists() else []
    cmd = [sys.executable, "-m", "archlab.cli", "experiment", "all", "--scale", "quick",
           "--out", str(args.out)] + (["--data-root", args.data_root] if args.data_root else [])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    done = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    # ru_maxrss of the children: the peak resident memory of the largest process the
    # command ran (in kB on Linux).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if done.returncode != 0:
        print(f"the command failed ({done.returncode}): {' '.join(cmd)}; run it again with "
              "the same --out to resume", file=sys.stderr)
        return done.returncode

    from archlab.experiments import list_experiments

    experiments = []
    for e in list_experiments():
        record = json.loads((args.out / e.name / "verdict.json").read_text())
        experiments.append({k: record[k] for k in ("name", "claim", "source", "paper",
                                                   "verdict", "because", "seconds", "numbers")})
    result = {
        "command": " ".join(["archlab"] + cmd[3:]),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "sum_of_experiment_seconds": round(sum(x["seconds"] for x in experiments), 1),
        "largest_process_peak_rss_bytes": peak,
        "resumed": resumed,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "experiments": experiments,
    }
    args.result.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"{len(experiments)} experiments in {wall / 60:.1f} min of wall time "
          f"({result['sum_of_experiment_seconds'] / 60:.1f} min measured, "
          f"{len(resumed)} resumed); largest process {peak / 2**30:.2f} GiB -> {args.result}")
    for x in experiments:
        print(f"  {x['name']:<22} {x['verdict']:<28} {x['seconds'] / 60:5.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
