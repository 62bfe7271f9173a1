#!/usr/bin/env python3
"""The table of bench/gpu/run_bench.sh: ds vs transformers from the files the run left in OUT_DIR.

  summarize.py --out OUT_DIR --config CFG.json [--ds-warmup 3] [--sft-cpu sft_cpu.jsonl]

Reads hf.jsonl (hf_bench.py), ds_train.jsonl (ds-pretrain --metrics), ds_decode.txt (ds-rollout summary lines
and nvidia-smi peaks), log.txt, kl_test.txt, sft_{f32,bf16}.jsonl; prints the table, the targets, the checks
and one JSON line with every number. A part that did not run shows as n/a.
"""
import argparse
import json
import os
import re
import statistics

TARGET_TRAIN_X = 3.0        # ds training >= 3x plain transformers
TARGET_DECODE_B1 = 1500.0   # tok/s
TARGET_DECODE_B64 = 30000.0


def active_params(c):
    h, nh = c["hidden_size"], c["num_attention_heads"]
    attn = (h * c["q_lora_rank"] + c["q_lora_rank"] * nh * (c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
            + h * (c["kv_lora_rank"] + c["qk_rope_head_dim"])
            + c["kv_lora_rank"] * nh * (c["qk_nope_head_dim"] + c["v_head_dim"]) + nh * c["v_head_dim"] * h)
    dense = 3 * h * c["intermediate_size"]
    moe = h * c["n_routed_experts"] + 3 * h * c["moe_intermediate_size"] * (c["n_shared_experts"] + c["num_experts_per_tok"])
    L, k = c["num_hidden_layers"], c["first_k_dense_replace"]
    return L * attn + k * dense + (L - k) * moe + h * c["vocab_size"]


def jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def fmt(x, spec=",.0f", na="n/a"):
    return na if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ds-warmup", type=int, default=3)
    ap.add_argument("--sft-cpu", default="")
    a = ap.parse_args()
    O = a.out
    cfg = json.load(open(a.config))
    n_act = active_params(cfg)
    flop_tok = 6 * n_act
    res = {"active_params": n_act, "flop_per_token_6n": flop_tok}

    # HF
    hf = {}
    hf_dec = {}
    hf_train_reps = []  # every HF eager training process's tokens/s (run_bench.sh's BENCH_HF_TRAIN_REPS)
    for r in jsonl(os.path.join(O, "hf.jsonl")):
        if "error" in r:
            res.setdefault("errors", []).append(r)
            continue
        if r["part"] == "decode":
            hf_dec[r["batch"]] = r
        elif r["part"] == "train":
            hf_train_reps.append(r["tokens_per_s"])
            hf.setdefault("train", r)  # the first process's record (its memory figures)
        else:
            hf[r["part"]] = r
    gemm = hf.get("gemm", {}).get("tflops")
    # HF eager moved between 96.5k and 112.3k tok/s from one full run to the next (11th-26th sessions), more than a
    # target's margin: the median over several processes steadies the ratio.
    hf_tr = statistics.median(hf_train_reps) if hf_train_reps else None
    res["hf_train_reps"] = hf_train_reps
    hf_tc = hf.get("train_compile", {}).get("tokens_per_s")

    # ds training
    steps, res["ds_train_run"] = [], "as configured"
    for r in jsonl(os.path.join(O, "ds_train.jsonl")):
        if "run" in r:  # a fallback run follows: keep only its steps
            steps, res["ds_train_run"] = [], r["run"]
        elif "tokens_per_s" in r:
            steps.append(r)
    timed = [r["tokens_per_s"] for r in steps if r["step"] > a.ds_warmup]
    ds_tr = statistics.median(timed) if timed else None
    res["ds_train_steps"] = [(r["step"], round(r["loss"], 4), round(r["tokens_per_s"])) for r in steps]
    log = open(os.path.join(O, "log.txt")).read() if os.path.exists(os.path.join(O, "log.txt")) else ""
    m = re.search(r"model: ([\d.]+[kM]?) parameters", log)
    res["ds_params"] = m.group(1) if m else None

    # ds decode and memory
    dec, mem, reps = {}, {}, {}
    dpath = os.path.join(O, "ds_decode.txt")
    for line in (open(dpath) if os.path.exists(dpath) else []):
        m = re.match(r"mem (\S+) (-?\d+)", line)
        if m:
            mem[m.group(1)] = max(mem.get(m.group(1), 0.0), int(m.group(2)) / 1024.0)  # GiB, the most of the runs
            continue
        m = re.match(r"(\S+) rc=0 .*?(\d+) prompts, (\d+) samples, (\d+) tokens in ([\d.]+) s", line)
        if m:  # one line a run; a repeated run (BENCH_DECODE_REPS) adds to the lists, medians below
            r = reps.setdefault(m.group(1), {"tokens": int(m.group(4)), "seconds": [], "decode_seconds": []})
            r["seconds"].append(float(m.group(5)))
            d = re.search(r"decode ([\d.]+) s", line)  # the engine's decode time alone (no prefill)
            if d:
                r["decode_seconds"].append(float(d.group(1)))
    for tag, r in reps.items():
        dec[tag] = {"tokens": r["tokens"], "seconds": statistics.median(r["seconds"]), "runs": len(r["seconds"])}
        if r["decode_seconds"]:
            dec[tag]["decode_seconds"] = statistics.median(r["decode_seconds"])
    for tag in ("train",):
        m = re.search(r"^mem %s (-?\d+)" % tag, log, re.M)
        if m:
            mem[tag] = int(m.group(1)) / 1024.0

    def decode_rates(prec, b, n_small, n_big, key="seconds"):
        s, g = dec.get(f"{prec}_b{b}_n{n_small}"), dec.get(f"{prec}_b{b}_n{n_big}")
        cold = s["tokens"] / s[key] if s and s.get(key, 0) > 0 else None
        warm = None
        if s and g and key in s and key in g and g[key] > s[key]:
            warm = (g["tokens"] - s["tokens"]) / (g[key] - s[key])
        return warm, cold

    ds_dec = {}
    for prec in ("bf16", "f32"):
        ds_dec[(prec, 1)] = decode_rates(prec, 1, 1, 5)
        ds_dec[(prec, 64)] = decode_rates(prec, 64, 64, 128)
    res["ds_decode"] = {f"{p}_b{b}": {"warm": w, "cold": c} for (p, b), (w, c) in ds_dec.items()}
    res["ds_mem_gib"] = mem

    def best_ds(b):  # the bf16 warm figure when there is one (the like-for-like with HF's bf16), else f32
        for prec in ("bf16", "f32"):
            w, c = ds_dec[(prec, b)]
            if w or c:
                return (w or c), prec, ("warm" if w else "cold")
        return None, None, None

    ceiling_frac = lambda tps: (tps * flop_tok / 1e12 / gemm) if tps and gemm else None
    tflops = lambda tps: tps * flop_tok / 1e12 if tps else None

    rows = []
    rows.append(("train tok/s (B16 x T1024, AdamW)", fmt(ds_tr), fmt(hf_tr), fmt(hf_tc),
                 fmt(ratio(ds_tr, hf_tr), ".2f"), fmt(ratio(ds_tr, hf_tc), ".2f"), ">= 3x HF eager"))
    rows.append(("train TFLOP/s (6 x active params)", fmt(tflops(ds_tr), ".1f"), fmt(tflops(hf_tr), ".1f"),
                 fmt(tflops(hf_tc), ".1f"), "", "", ""))
    rows.append(("fraction of measured bf16 GEMM peak", fmt(ceiling_frac(ds_tr), ".1%"), fmt(ceiling_frac(hf_tr), ".1%"),
                 fmt(ceiling_frac(hf_tc), ".1%"), "", "", ""))
    rows.append(("train peak GPU memory, GiB", fmt(mem.get("train"), ".1f") + " (smi)",
                 fmt(hf.get("train", {}).get("peak_alloc_gib"), ".1f"),
                 fmt(hf.get("train_compile", {}).get("peak_alloc_gib"), ".1f"), "", "", ""))
    for b, tgt in ((1, TARGET_DECODE_B1), (64, TARGET_DECODE_B64)):
        d, prec, kind = best_ds(b)
        h = hf_dec.get(b, {}).get("tokens_per_s")
        runs = dec.get(f"{prec}_b{b}_n{1 if b == 1 else 64}", {}).get("runs", 1)
        how = f"{kind or ''}, median of {runs} runs" if runs > 1 else (kind or "")
        rows.append((f"decode tok/s, batch {b} ({prec or 'n/a'}, {how})", fmt(d), fmt(h), "",
                     fmt(ratio(d, h), ".1f"), "", f">= {tgt:,.0f} tok/s"))
        w32, c32 = ds_dec[("f32", b)]
        wb, cb = ds_dec[("bf16", b)]
        rows.append((f"  batch {b}: ds bf16 warm / cold, f32 warm / cold", f"{fmt(wb)} / {fmt(cb)}, {fmt(w32)} / {fmt(c32)}",
                     "", "", "", "", ""))
        # The warm rate above is from whole-run times (the extra prompts' prefill included, which varies by tens of
        # ms from run to run); the engine's own decode time gives the decode rate alone. Shown, not the target's.
        wd, _ = decode_rates(prec or "bf16", b, 1 if b == 1 else 64, 5 if b == 1 else 128, "decode_seconds")
        rows.append((f"  batch {b}: ds warm from decode time alone", fmt(wd), "", "", "", "", ""))
        memk = f"{prec}_b{b}_n{5 if b == 1 else 128}"
        rows.append((f"decode peak GPU memory, batch {b}, GiB", fmt(mem.get(memk), ".2f") + " (smi)",
                     fmt(hf_dec.get(b, {}).get("peak_alloc_gib"), ".2f"), "", "", "", ""))

    hdr = ("metric", "ds", "HF eager", "HF compiled", "ds/HF", "ds/HF-compiled", "target")
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"
    print(f"bf16 GEMM ceiling (torch.matmul 8192^3, median): {fmt(gemm, '.1f')} TFLOP/s; active params "
          f"{n_act / 1e6:.2f}M -> {flop_tok / 1e9:.3f} GFLOP per trained token (6N)")
    print(line(hdr))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if len(hf_train_reps) > 1:
        print("HF eager training, median of %d processes: %s tok/s" %
              (len(hf_train_reps), " / ".join(fmt(v) for v in hf_train_reps)))

    # targets
    d1 = best_ds(1)[0]
    d64 = best_ds(64)[0]
    tg = {
        "train >= 3x HF eager": (ratio(ds_tr, hf_tr), lambda v: v >= TARGET_TRAIN_X),
        "decode batch 1 >= 1,500 tok/s": (d1, lambda v: v >= TARGET_DECODE_B1),
        "decode batch 64 >= 30,000 tok/s": (d64, lambda v: v >= TARGET_DECODE_B64),
    }
    res["targets"] = {}
    for k, (v, ok) in tg.items():
        verdict = "n/a" if v is None else ("MET" if ok(v) else "NOT MET")
        res["targets"][k] = verdict
        print(f"target {k}: {verdict} ({fmt(v, ',.2f')})")

    # checks
    kl = open(os.path.join(O, "kl_test.txt")).read() if os.path.exists(os.path.join(O, "kl_test.txt")) else ""
    m = re.search(r"^(All tests passed.*|test cases:.*)$", kl, re.M)
    res["kl_test"] = (m.group(1) if m else "no result") + (" rc=" + re.findall(r"rc=(\d+)", kl)[-1] if "rc=" in kl else "")
    print("ds_test_gpu_kl:", res["kl_test"])
    cpu = {r["step"]: r["loss"] for r in jsonl(a.sft_cpu) if "loss" in r} if a.sft_cpu else {}
    for prec in ("f32", "bf16"):
        g = {r["step"]: r["loss"] for r in jsonl(os.path.join(O, f"sft_{prec}.jsonl")) if "loss" in r}
        common = sorted(set(g) & set(cpu))
        if not g:
            msg = "no metrics"
        elif not common:
            msg = f"{len(g)} steps, no CPU reference"
        else:
            rel = [abs(g[s] - cpu[s]) / abs(cpu[s]) for s in common]
            msg = (f"{len(g)} steps, loss {g[min(g)]:.4f} -> {g[max(g)]:.4f}; vs CPU f32 over {len(common)} steps: "
                   f"max rel. diff {max(rel):.2e}, mean {statistics.mean(rel):.2e}")
        res[f"sft_{prec}"] = msg
        print(f"ds-sft --device cuda --precision {prec}:", msg)
    res["hf"] = hf
    res["hf_decode"] = hf_dec
    res["ds_train_tokens_per_s"] = ds_tr
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
