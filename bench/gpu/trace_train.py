#!/usr/bin/env python3
"""Idle time inside a training step, from a kernel_trace.so timeline (bench/gpu/kernel_trace.cpp).

    trace_train.py TRACE.tsv [--top N]

Steps are split after each optimizer pass (the last adamw kernel of a run of them); when the optimizer overlaps the
next forward on a stream of its own (AdamW::set_overlap, the trainer's default on CUDA since the 17th session), at
each forward's first kernel (embedding_fwd), and the last full step is the last such span with a backward in it
(ce_bwd, or ce_fused when the forward computes the loss gradient; the run's final evaluation is a forward
alone). For the last full step it prints the wall span (first kernel
start to last kernel end), the time some kernel, memset or copy was running (union of their intervals), the idle rest,
the N longest idle gaps with the kernels on either side (a gap after a kernel that is followed by a host read, a loss
sum or an expert count, shows as a long gap before the next launch), each stream's busy time when more than one ran
(the overlap; split at the loss into the forward and the backward, with the time the step's stream sat idle by what
else ran meanwhile), the gaps before cuBLASLt's products with and without a memset before them, the forward's pace
beside the update's stages, the wait between backward and the next forward, and the N kernels with the most
exclusive time. Exclusive, because with programmatic dependent
launch a kernel's blocks start before the previous kernel ends and wait: its span overlaps the one before, so the
spans add up to more than the step. Each kernel is charged from the later of its start and the previous end to its end (in end
order).

With TRACE.tsv.api beside it (kernel_trace.so under DS_TRACE_API: the host's launch calls), it also prints, for the
stream that runs the forward and backward, how long the GPU waited for the host: between two of its kernels, the
part of the gap before the second one's launch call had returned (the queue was empty), split into the forward (up
to the loss) and the backward, with the median lead (how long before its start the host had launched a kernel)."""
import os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trace_step import demangle  # noqa: E402 (c++filt, template arguments dropped)


def main():
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 15
    rows = []
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 10:
            rows.append((int(f[0]), int(f[1]), f[9], f[2], int(f[10]) if len(f) > 10 else 0))
    rows.sort()
    corr = [r[4] for r in rows]
    stream_of = [r[3] for r in rows]
    rows = [r[:3] for r in rows]
    raw = [r[2] for r in rows]
    names = [n if n.startswith("mem") else d for n, d in zip(raw, demangle(raw))]  # memset:/memcpy: rows as they are
    streams = {f[2] for f in (line.split("\t") for line in open(path)) if len(f) >= 10 and "adamw" in f[9]}
    main_streams = {f[2] for f in (line.split("\t") for line in open(path)) if len(f) >= 10 and is_loss_bwd(f[9])}
    if streams and not streams & main_streams:  # the overlap: split at each forward's start
        starts = [i for i, n in enumerate(names) if "embedding_fwd" in n]
        spans = [(x, y) for x, y in zip(starts, starts[1:]) if any(is_loss_bwd(n) for n in names[x:y])]
        if not spans:
            sys.exit("no full training step in the trace (%d kernels)" % len(rows))
        a, b = spans[-1]
        print("optimizer on its own stream: the step from one forward's start to the next")
    else:
        ad = [i for i, n in enumerate(names) if "adamw" in n]
        ends = [i for j, i in enumerate(ad) if j + 1 == len(ad) or ad[j + 1] - i > 20]
        if len(ends) < 2:
            sys.exit("fewer than two optimizer passes in the trace (%d kernels)" % len(rows))
        a, b = ends[-2] + 1, ends[-1] + 1
    step = rows[a:b]
    t0, t1 = step[0][0], max(r[1] for r in step)
    busy, cur_s, cur_e = 0, step[0][0], step[0][1]
    gaps = []
    for k in range(a + 1, b):
        s, e, _ = rows[k]
        if s > cur_e:
            busy += cur_e - cur_s
            gaps.append((s - cur_e, k))
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    span = t1 - t0
    for kind in ("memset", "memcpy"):
        ops = [r for r in step if r[2].startswith(kind + ":")]
        if ops:
            print("%s: %d, %.2f ms, %.2f GB" % (kind, len(ops), sum(r[1] - r[0] for r in ops) / 1e6,
                                                 sum(int(r[2].rsplit(":", 1)[1]) for r in ops) / 1e9))
    print("step of %d kernels: span %.2f ms, kernels running %.2f ms, idle %.2f ms (%.1f%%) in %d gaps"
          % (b - a, span / 1e6, busy / 1e6, (span - busy) / 1e6, 100.0 * (span - busy) / span, len(gaps)))
    small = sum(g for g, _ in gaps if g < 10000)
    print("  gaps < 10 us: %.2f ms in %d; >= 10 us: %.2f ms in %d" % (small / 1e6, sum(1 for g, _ in gaps if g < 10000),
          (span - busy - small) / 1e6, sum(1 for g, _ in gaps if g >= 10000)))
    print("longest gaps (us, kernel before -> kernel after):")
    for g, k in sorted(gaps, reverse=True)[:top]:
        print("  %8.1f  %s -> %s" % (g / 1e3, names[k - 1], names[k]))
    excl, prev_end = {}, step[0][0]
    for k in sorted(range(a, b), key=lambda k: rows[k][1]):
        s, e, _ = rows[k]
        name = names[k].split(":")[0] if names[k].startswith("mem") else names[k]
        n, t = excl.get(name, (0, 0))
        excl[name] = (n + 1, t + max(0, e - max(s, prev_end)))
        prev_end = max(prev_end, e)
    by_stream = {}
    for k in range(a, b):
        by_stream.setdefault(stream_of[k], []).append(rows[k][:2])
    if len(by_stream) > 1:  # the overlap: how busy each stream was, on its own
        for st, iv in sorted(by_stream.items(), key=lambda x: -len(x[1])):
            print("stream %s: %d kernels, busy %.2f ms" % (st, len(iv), busy_ns(iv) / 1e6))
        phases(rows, names, stream_of, a, b, by_stream)
    memset_gaps(rows, names, stream_of, a, b)
    forward_pace(rows, names, stream_of, a, b)
    between_steps(rows, names, stream_of, b, path + ".api" if os.path.exists(path + ".api") else None)
    print("exclusive time by kernel (ms, launches, us a launch):")
    for name, (n, t) in sorted(excl.items(), key=lambda x: -x[1][1])[:top]:
        print("  %8.2f %5d %8.1f  %s" % (t / 1e6, n, t / 1e3 / n, name))

    if os.path.exists(path + ".api"):
        host_waits(path + ".api", rows, names, stream_of, corr, a, b)


def busy_ns(iv, lo=None, hi=None):
    """Length of the union of the intervals [s, e), clipped to [lo, hi) when given."""
    if lo is not None:
        iv = [(max(s, lo), min(e, hi)) for s, e in iv if e > lo and s < hi]
    t, cs, ce = 0, None, None
    for s, e in sorted(iv):
        if cs is None or s > ce:
            t += 0 if cs is None else ce - cs
            cs, ce = s, e
        else:
            ce = max(ce, e)
    return t + (0 if cs is None else ce - cs)


def phases(rows, names, stream_of, a, b, by_stream):
    """The step split at the loss (forward, then backward): each stream's busy time in each, and the time the
    step's stream (the one running the loss) sat idle, by which other streams ran meanwhile (waiting for the
    optimizer's update of a layer's weights in the forward, for the side stream at a join)."""
    loss = next((k for k in range(a, b) if "ce_fwd" in names[k] or "ce_fused" in names[k]), None)
    if loss is None:
        return
    t0, tl, t1 = rows[a][0], rows[loss][0], max(r[1] for r in rows[a:b])
    main = stream_of[loss]
    for phase, lo, hi in (("forward", t0, tl), ("backward", tl, t1)):
        print("%s %.2f ms: %s" % (phase, (hi - lo) / 1e6, ", ".join(
            "stream %s busy %.2f" % (st, busy_ns(iv, lo, hi) / 1e6) for st, iv in sorted(by_stream.items()))))
    iv, gaps, end = sorted(by_stream[main]), [], None
    for s, e in iv:
        if end is not None and s > end:
            gaps.append((end, s))
        end = e if end is None else max(end, e)
    idle = {}
    for lo, hi in gaps:
        others = tuple(st for st in sorted(by_stream) if st != main and busy_ns(by_stream[st], lo, hi) > 0)
        key = ("forward" if lo < tl else "backward", others)
        idle[key] = idle.get(key, 0) + hi - lo
    for (phase, others), t in sorted(idle.items(), key=lambda x: -x[1]):
        print("  stream %s idle in the %s while %s ran: %.2f ms" % (main, phase, " and ".join(
            "stream " + o for o in others) or "nothing else", t / 1e6))


def memset_gaps(rows, names, stream_of, a, b):
    """cuBLASLt's products (nvjet kernels) on the step's stream: the gap from the kernel before to the product when
    a memset came between them (cublasLtMatmul issues a 4-byte one itself before most) against when none did."""
    loss = next((k for k in range(a, b) if "ce_fwd" in names[k] or "ce_fused" in names[k]), None)
    if loss is None:
        return
    ks = [k for k in range(a, b) if stream_of[k] == stream_of[loss]]
    after_memset, direct = [], []
    for i in range(1, len(ks)):
        k = ks[i]
        if "nvjet" not in names[k]:
            continue
        if names[ks[i - 1]].startswith("memset") and i >= 2 and not names[ks[i - 2]].startswith("mem"):
            after_memset.append(rows[k][0] - rows[ks[i - 2]][1])
        elif not names[ks[i - 1]].startswith("mem"):
            direct.append(rows[k][0] - rows[ks[i - 1]][1])
    if after_memset and direct:
        print("cuBLASLt products on stream %s: %d after a memset, gap from the kernel before median %.1f us (%.2f ms "
              "in all); %d straight after a kernel, median %.1f us" % (
                  stream_of[loss], len(after_memset), statistics.median(after_memset) / 1e3,
                  sum(after_memset) / 1e6, len(direct), statistics.median(direct) / 1e3))


def forward_pace(rows, names, stream_of, a, b):
    """With the optimizer's overlap: how often its update stages ended during the step's forward (from its start
    to the loss), and how long the step's stream sat before its next kernel each time it waited 100 us or more (the
    22nd and 27th sessions: a MoE layer's forward starts ~0.2 ms after its stage's update ends)."""
    loss = next((k for k in range(a, b) if "ce_fwd" in names[k] or "ce_fused" in names[k]), None)
    if loss is None:
        return
    main = stream_of[loss]
    ends = sorted(rows[k][1] for k in range(a, loss) if "adamw" in names[k] and stream_of[k] != main)
    if len(ends) < 3:
        return
    waits, prev_end = [], None
    for k in range(a, loss):
        if stream_of[k] != main:
            continue
        if prev_end is not None and rows[k][0] - prev_end >= 100000:
            waits.append(rows[k][0] - prev_end)
        prev_end = rows[k][1] if prev_end is None else max(prev_end, rows[k][1])
    spacing = [y - x for x, y in zip(ends, ends[1:])]
    print("forward pace: %d update stages ended, median %.2f ms apart; the step's stream waited >= 100 us %d times, "
          "median %.0f us (%.2f ms in all)" % (len(ends), statistics.median(spacing) / 1e6, len(waits),
                                                statistics.median(waits) / 1e3 if waits else 0, sum(waits) / 1e6))


def between_steps(rows, names, stream_of, b, api_path=None):
    """From the backward's last kernel on the step's stream to the next forward's embedding (index b): how long the
    step's stream ran nothing of the model's, and what ran meanwhile (the gradient norm, the update's first stages,
    the router biases, the host's reads); the 27th session found 1.8 ms here. With the host-call file, the host's
    CUDA calls in that window by name (count, us): where the host spent it."""
    if b >= len(rows) or "embedding_fwd" not in names[b]:
        return
    main = stream_of[b]
    k = b - 1
    while k >= 0 and (stream_of[k] != main or names[k].startswith("mem") or "bias_update" in names[k]):
        k -= 1
    if k < 0:
        return
    t_end = rows[k][1]
    seen = {}
    for j in range(k + 1, b):
        if rows[j][0] >= t_end:
            key = (stream_of[j], names[j].split(":")[0] if names[j].startswith("mem") else names[j])
            n, t = seen.get(key, (0, 0))
            seen[key] = (n + 1, t + rows[j][1] - rows[j][0])
    during = "; ".join("%s %s %d %.0f" % (st, n[:32], c, t / 1e3) for (st, n), (c, t) in sorted(seen.items()))
    print("between steps: %.1f us from the backward's last kernel (%s) to the next forward's first; meanwhile "
          "(stream, what, count, us): %s" % ((rows[b][0] - t_end) / 1e3, names[k][:40], during))
    if api_path:
        calls = {}
        for line in open(api_path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 4 and int(f[0]) < rows[b][0] and int(f[1]) > t_end:
                n, t = calls.get(f[3], (0, 0))  # the part of the call inside the window
                calls[f[3]] = (n + 1, t + min(int(f[1]), rows[b][0]) - max(int(f[0]), t_end))
        top = sorted(calls.items(), key=lambda x: -x[1][1])
        print("  the host's calls meanwhile (name, count, us): " +
              "; ".join("%s %d %.0f" % (name.split("_v")[0], n, t / 1e3) for name, (n, t) in top))


def is_loss_bwd(name):
    return "ce_bwd" in name or "ce_fused" in name


def host_waits(api_path, rows, names, stream_of, corr, a, b):
    launch_end = {}
    for line in open(api_path):
        f = line.rstrip("\n").split("\t")
        if len(f) >= 4 and int(f[2]):
            launch_end[int(f[2])] = max(launch_end.get(int(f[2]), 0), int(f[1]))
    loss = next((k for k in range(a, b) if "ce_fwd" in names[k] or "ce_fused" in names[k]), None)
    if loss is None:
        return
    main = [k for k in range(a, b) if stream_of[k] == stream_of[loss]]
    found = sum(1 for k in main if corr[k] in launch_end)
    print("host launches (stream %s: %d of %d kernels matched to their launch call):" % (stream_of[loss], found,
                                                                                        len(main)))
    for phase, ks in (("forward", [k for k in main if k <= loss]), ("backward", [k for k in main if k > loss])):
        waited, n, leads = 0, 0, []
        for p, k in zip(ks, ks[1:]):
            if corr[k] not in launch_end:
                continue
            leads.append(rows[k][0] - launch_end[corr[k]])
            w = min(rows[k][0], launch_end[corr[k]]) - rows[p][1]
            if w > 0:
                waited += w
                n += 1
        if leads:
            print("  %-8s: the GPU waited for the host %.2f ms in %d gaps of %d kernels; median lead %.1f us"
                  % (phase, waited / 1e6, n, len(ks), statistics.median(leads) / 1e3))


if __name__ == "__main__":
    main()
