"""The main job, timed: `archlab compare` (the quick-tour protocol) as a newcomer runs it.

Each repetition starts `archlab compare` in a fresh process on a fresh study directory, so
the clock includes what a user waits for: importing torch, loading Fashion-MNIST, every
run's training, evaluation and measurement, the table and the report. It records

- the wall time of the whole command (the target: under 10 minutes on a 2-core CPU),
- the peak resident memory of that process and its worker processes together, sampled
  four times a second (the target: under 4 GB),
- every model's test top-1 (the target: each at least 85%),
- the ranking the command prints; with `--repeat 2` (the default) the two rankings and
  accuracies must be identical (the same seed gives the same study),

and writes them as JSON (default benchmarks/results/quick_tour.json). The load average is
recorded before and after: on a shared machine the times are pessimistic.

    python benchmarks/quick_tour.py                       # quick-tour, twice
    python benchmarks/quick_tour.py --repeat 1 --protocol my.yaml
    python benchmarks/quick_tour.py --repeat 1 --against benchmarks/results/quick_tour.json
                                                          # one more, checked against the last
    python benchmarks/quick_tour.py --repeat 1 --minutes 30 \
        --out benchmarks/results/quick_tour_3_seeds.json -- --seeds 3
                                                          # three seeds: intervals, verdict

Each repetition also records what the report concludes: every model's mean top-1 with its
95% interval, its rank ("=1" when tied with the first), every pair's difference with its
bootstrap interval and Holm-adjusted p-value, and the verdict in words.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from archlab.analysis.speed import cpu_name

TARGET_S, TARGET_MEM, TARGET_TOP1 = 600.0, 4 * 2**30, 0.85


class TreeMemory(threading.Thread):
    """The peak of the summed resident memory of a process and all its descendants (the
    quick tour trains in worker processes), read from /proc every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _tree(self) -> list[int]:
        pids, i = [self.pid], 0
        while i < len(pids):
            try:
                for task in Path(f"/proc/{pids[i]}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
            i += 1
        return pids

    def _rss(self, pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return 0

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, sum(map(self._rss, self._tree())))


def run_once(protocol: str, study: Path, extra: list[str]) -> dict:
    """One `archlab compare` in a child process; its wall time, peak RSS and results."""
    from archlab.study import open_study

    cmd = [sys.executable, "-m", "archlab.cli", "compare", protocol, "--study", str(study),
           "--no-progress", *extra]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    memory = TreeMemory(proc.pid)
    memory.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    memory.done.set()
    memory.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited with {code}")
    _, store = open_study(study)
    try:
        runs = [r for r in store.runs() if r.status == "done"]
    finally:
        store.close()
    ranked = sorted(runs, key=lambda r: (-r.top1, r.label, r.seed))
    return {
        "wall_s": round(wall, 1),
        # The sampled sum over the process tree; at least the largest single process.
        "peak_rss_bytes": max(memory.peak, usage.ru_maxrss * 1024),
        "largest_process_rss_bytes": usage.ru_maxrss * 1024,
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "ranking": [r.label for r in ranked],
        "runs": [{"label": r.label, "model": r.model, "seed": r.seed, "top1": r.top1,
                  "top5": r.top5, "train_time_s": r.train_time, "wall_time_s": r.wall_time,
                  "epochs": r.epochs_done, "params": r.params, "macs": r.macs}
                 for r in ranked],
        **conclusions(runs),
    }


def conclusions(runs: list) -> dict:
    """What the report concludes from the runs: intervals, ranks, pairs, the verdict."""
    from archlab.study import judge, summarize

    summaries = summarize(runs)
    verdict = judge(summaries)
    ranks = verdict.ranks()
    models = []
    for s in summaries:
        ci = s.interval()
        models.append({"label": s.label, "rank": ranks.get(s.label), "seeds": len(s.done),
                       "top1_mean": s.mean("top1"), "top1_ci": ci and [ci.low, ci.high],
                       "ci_method": ci and ci.method, "train_time_mean_s": s.mean("train_time"),
                       "train_time_sd_s": s.std("train_time")})
    pairs = [{"a": a, "b": b, "delta": d.delta, "ci": [d.ci.low, d.ci.high],
              "p": d.p_value, "p_adjusted": d.p_adjusted, "significant": d.significant,
              "a_only": d.a_only, "b_only": d.b_only} for (a, b), d in verdict.pairs.items()]
    return {"models": models, "pairs": pairs, "verdict": verdict.sentences()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="quick-tour")
    ap.add_argument("--repeat", type=int, default=2, help="runs of the whole command")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "quick_tour.json"))
    ap.add_argument("--keep", help="keep the studies under this directory")
    ap.add_argument("--minutes", type=float, default=TARGET_S / 60,
                    help="the wall-time target (default 10: one seed)")
    ap.add_argument("--against", help="a previous result file whose repetitions join these "
                                      "(the ranking must be the same)")
    ap.add_argument("extra", nargs="*", help="more `archlab compare` arguments (after --)")
    args = ap.parse_args()

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="archlab-tour-"))
    reps = []
    try:
        for i in range(args.repeat):
            study = base / f"study{i}"
            shutil.rmtree(study, ignore_errors=True)
            rep = run_once(args.protocol, study, args.extra)
            reps.append(rep)
            print(f"\nrepetition {i + 1}: {rep['wall_s']:.0f} s wall, peak memory "
                  f"{rep['peak_rss_bytes'] / 2**30:.2f} GiB, load {rep['load_before']} -> "
                  f"{rep['load_after']}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    if args.against:
        reps = json.loads(Path(args.against).read_text())["repetitions"] + reps
    first = reps[0]
    checks = {
        f"wall time under {args.minutes:g} min": all(r["wall_s"] < 60 * args.minutes
                                                     for r in reps),
        "peak memory under 4 GiB": all(r["peak_rss_bytes"] < TARGET_MEM for r in reps),
        f"every model at least {TARGET_TOP1:.0%}": all(
            x["top1"] >= TARGET_TOP1 for r in reps for x in r["runs"]),
        "same ranking and accuracies in every repetition": all(
            [(x["label"], x["top1"]) for x in r["runs"]]
            == [(x["label"], x["top1"]) for x in first["runs"]] for r in reps),
    }
    result = {
        "protocol": args.protocol, "machine": cpu_name(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "repetitions": reps, "checks": checks,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{'model':42s} {'seed':>4s} {'top-1':>7s} {'train':>7s} {'wall':>7s}")
    for x in first["runs"]:
        print(f"{x['label']:42s} {x['seed']:4d} {x['top1']:7.2%} {x['train_time_s']:6.0f}s "
              f"{x['wall_time_s']:6.0f}s")
    for sentence in first["verdict"]:
        print(sentence)
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'MISS'} {name}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
