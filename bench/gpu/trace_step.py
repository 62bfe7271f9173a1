#!/usr/bin/env python3
"""Where a CUDA-graph decode step's time goes, from a kernel_trace.so timeline (bench/gpu/kernel_trace.cpp).

    trace_step.py TRACE.tsv [--steps A:B] [--list]

A step is the kernels of one graph replay, from the end of one sampling kernel to the end of the next. Each
kernel's share of the step is how far it moves the latest end time (kernels sorted by end): with programmatic
dependent launch a kernel starts early and waits, so its start says little; what it adds to the step is the time
from the previous kernel's end to its own. The shares of a step add up to the step. Prints the per-kernel shares
averaged over the steady steps (by kernel name), and with --list one median step kernel by kernel.

Caveat (bench/gpu/SESSIONS-2026-11-29.md, "Kernel timeline, ...", 8th session): where a step has parallel branches
(a side stream), a kernel whose end falls after a branch kernel's gets only the time since that end, so a long kernel
beside a branch looks short and the kernel after the join looks long. Read the critical path from a step without
branches, or from the --list columns (start, end) of both streams."""
import collections, statistics, subprocess, sys


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        d = out.split("\n")[: len(names)]
    except (OSError, subprocess.CalledProcessError):
        d = names
    short = []
    for s in d:
        s = s.replace("(anonymous namespace)::", "").split("(")[0]
        depth, base = 0, ""
        for ch in s:  # drop template arguments
            if ch == "<":
                depth += 1
            elif ch == ">":
                depth -= 1
            elif depth == 0:
                base += ch
        short.append(base.replace("void ", "", 1).replace("ds::cuda::", "").replace("(anonymous namespace)::", "").strip())
    return short


def main():
    path = sys.argv[1]
    steps_arg = next((a.split("=", 1)[1] if "=" in a else sys.argv[sys.argv.index(a) + 1]
                      for a in sys.argv[2:] if a.startswith("--steps")), None)
    rows = []
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) < 10:
            continue
        rows.append((int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]), (int(f[5]), int(f[6]), int(f[7])),
                     int(f[8]), f[9]))
    graph = sorted((r for r in rows if r[3] != 0), key=lambda r: r[1])
    if not graph:
        sys.exit("trace_step: no kernels launched from CUDA graphs in " + path)
    uniq = sorted({r[7] for r in graph})
    short = dict(zip(uniq, demangle(uniq)))
    ends = [i for i, r in enumerate(graph) if "sample" in short[r[7]]]
    steps = []
    for a, b in zip(ends, ends[1:]):
        ks = graph[a + 1 : b + 1]
        wall = graph[b][1] - graph[a][1]
        if wall > 5e6:  # a gap between graph replays of different runs or batches: not a step
            continue
        prev, shares = graph[a][1], []
        for r in ks:
            shares.append((short[r[7]], r, max(0, r[1] - prev)))
            prev = max(prev, r[1])
        steps.append((wall, shares))
    if not steps:
        sys.exit("trace_step: no complete decode step")
    lo, hi = (int(x) for x in steps_arg.split(":")) if steps_arg else (len(steps) // 4, len(steps) * 3 // 4 + 1)
    sel = steps[lo:hi] or steps
    walls = [w for w, _ in sel]
    print("steps %d (of %d): wall median %.1f us, mean %.1f us, min %.1f us; %d kernels a step"
          % (len(sel), len(steps), statistics.median(walls) / 1e3, statistics.mean(walls) / 1e3, min(walls) / 1e3,
             len(sel[0][1])))
    tot, cnt, dur = collections.Counter(), collections.Counter(), collections.Counter()
    for _, shares in sel:
        for name, r, s in shares:
            tot[name] += s
            cnt[name] += 1
            dur[name] += r[1] - r[0]
    n = len(sel)
    step = sum(walls) / n
    print("%10s %6s %5s %10s %10s  %s" % ("share_us", "share%", "x", "us_each", "dur_each", "kernel"))
    for name, t in tot.most_common():
        print("%10.1f %6.1f %5d %10.2f %10.2f  %s" % (t / n / 1e3, 100 * t / n / step, cnt[name] // n,
                                                     t / cnt[name] / 1e3, dur[name] / cnt[name] / 1e3, name))
    if "--list" in sys.argv:
        wall, shares = sorted(sel, key=lambda s: s[0])[len(sel) // 2]
        t0 = shares[0][1][0]
        print("\none median step (%.1f us): start and end from the first kernel's start, share" % (wall / 1e3))
        for i, (name, r, s) in enumerate(shares):
            print("%4d %8.2f %8.2f %7.2f  s%-3d %-14s %s" % (i, (r[0] - t0) / 1e3, (r[1] - t0) / 1e3, s / 1e3, r[2],
                                                           "%dx%dx%d" % r[5], name))


if __name__ == "__main__":
    main()
