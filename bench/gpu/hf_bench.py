#!/usr/bin/env python3
"""The Hugging Face transformers side of bench/gpu/run_bench.sh (issue 5): DeepseekV3ForCausalLM on one GPU.

Runs on the GPU machine (python3 with torch + transformers). Parts, each appending one JSON line to --out:
  gemm          the bf16 GEMM ceiling: torch.matmul of two random 8192x8192 bf16 matrices (cuBLAS), median of
                --gemm-reps timed products after 3 warm-ups (CUDA events); TFLOP/s = 2*8192^3 / time.
  train         a training step: random init from --config (bf16 parameters, sdpa attention), random token ids
                of --batch x --seq (uniform over the vocabulary), loss = model(ids, labels=ids).loss, backward,
                grad-norm clip 1.0, torch.optim.AdamW (lr 3e-4, betas 0.9/0.95, wd 0.1; PyTorch's default
                foreach implementation), zero_grad. --warmup untimed steps, then --steps timed steps, each
                between torch.cuda.synchronize() calls; tokens/s from the median step. Peak memory:
                torch.cuda.max_memory_allocated over warm-up + timed steps.
  train_compile the same step with the model wrapped in torch.compile (default mode); the first warm-up
                step compiles (its wall time is reported as compile_s).
  decode        generate(do_sample=True, temperature 1, top_k 0 (off), top_p 1, max_new_tokens = min_new_tokens
                = --new-tokens) after the 128-token prompts of --prompts ({"ids"} records, the same ids ds-rollout
                decodes), at batch 1 (the first prompt) and batch 64 (the first 64). One short untimed
                generate per batch size first; then one timed generate per batch size: tokens/s = batch x
                new tokens / wall time (prefill included, synchronized). Peak memory: max_memory_allocated of
                the timed generate, with the model resident.
Usage: hf_bench.py --config CFG.json --prompts P.jsonl --out results.jsonl --parts gemm,train,decode [...]
"""
import argparse
import json
import statistics
import sys
import time

import torch


def log(*a):
    print("hf_bench:", *a, file=sys.stderr, flush=True)


def emit(path, rec):
    rec["torch"] = torch.__version__
    import transformers
    rec["transformers"] = transformers.__version__
    line = json.dumps(rec)
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def gemm_ceiling(reps):
    n = 8192
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        c = a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        c = a @ b
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    del c
    t = statistics.median(times)
    return {"part": "gemm", "shape": [n, n, n], "reps": reps, "median_s": t, "tflops": 2 * n ** 3 / t / 1e12,
            "best_tflops": 2 * n ** 3 / min(times) / 1e12}


def load_config(cfg_path):
    """DeepseekV3Config from the bench's config.json (the file ds-pretrain --config reads)."""
    from transformers import DeepseekV3Config
    kw = json.load(open(cfg_path))
    for k in ("architectures", "model_type", "head_dim"):
        kw.pop(k, None)
    theta = kw.pop("rope_theta", 10000.0)
    try:  # transformers 5.x: rope_parameters
        cfg = DeepseekV3Config(rope_parameters={"rope_type": "default", "rope_theta": theta}, **kw)
    except TypeError:  # older: rope_theta
        cfg = DeepseekV3Config(rope_theta=theta, **kw)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception as e:
        log(f"cannot set the attention implementation on the config: {e}")
    return cfg


def make_model(cfg_path):
    from transformers import DeepseekV3ForCausalLM
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # parameters created in bf16, directly on the GPU
    try:
        with torch.device("cuda"):
            model = DeepseekV3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters ({', '.join(dtypes)}), attention "
        f"{getattr(model.config, '_attn_implementation', '?')}, experts "
        f"{getattr(model.config, '_experts_implementation', getattr(model.config, 'experts_implementation', 'default'))}")
    return cfg, model


def active_params(cfg):
    """Matmul parameters one token passes through (embedding lookup excluded, lm_head included)."""
    h, nh = cfg.hidden_size, cfg.num_attention_heads
    attn = (h * cfg.q_lora_rank + cfg.q_lora_rank * nh * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim)
            + h * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank * nh * (cfg.qk_nope_head_dim + cfg.v_head_dim)
            + nh * cfg.v_head_dim * h)
    dense = 3 * h * cfg.intermediate_size
    moe = h * cfg.n_routed_experts + 3 * h * cfg.moe_intermediate_size * (cfg.n_shared_experts + cfg.num_experts_per_tok)
    L, k = cfg.num_hidden_layers, cfg.first_k_dense_replace
    return L * attn + k * dense + (L - k) * moe + h * cfg.vocab_size


def train(cfg_path, batch, seq, warmup, steps, compile_model):
    cfg, model = make_model(cfg_path)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    fwd = torch.compile(model) if compile_model else model
    g = torch.Generator(device="cuda").manual_seed(1)
    torch.cuda.reset_peak_memory_stats()
    times, losses, first_s = [], [], None
    for i in range(warmup + steps):
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda", generator=g)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if i == 0:
            first_s = dt
        if i >= warmup:
            times.append(dt)
        log(f"{'compiled ' if compile_model else ''}train step {i + 1}: {dt * 1e3:.1f} ms, loss {losses[-1]:.4f}")
    t = statistics.median(times)
    return {"part": "train_compile" if compile_model else "train", "batch": batch, "seq": seq, "warmup": warmup,
            "steps": steps, "median_step_s": t, "tokens_per_s": batch * seq / t,
            "mean_tokens_per_s": batch * seq * len(times) / sum(times), "first_step_s": first_s,
            "compile_s": first_s if compile_model else None, "loss_first": losses[0], "loss_last": losses[-1],
            "params": n_params, "active_params": active_params(cfg),
            "attn_implementation": str(getattr(model.config, "_attn_implementation", "?")),
            "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2 ** 30}


def decode(cfg_path, prompts_path, new_tokens, batches):
    cfg, model = make_model(cfg_path)
    model.eval()
    prompts = [json.loads(l)["ids"] for l in open(prompts_path)]
    out = []
    gen_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=cfg.eos_token_id)
    for B in batches:
        ids = torch.tensor(prompts[:B], device="cuda")
        mask = torch.ones_like(ids)
        with torch.no_grad():
            try:
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, **gen_kw)
            except Exception as e:  # a transformers that rejects top_k=0: its default top-k instead
                log(f"generate with top_k=0 failed ({e}); using the default top_k")
                gen_kw.pop("top_k")
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, **gen_kw)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, **gen_kw)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        gen = res.shape[1] - ids.shape[1]
        rec = {"part": "decode", "batch": B, "prompt_tokens": ids.shape[1], "new_tokens": gen, "seconds": dt,
               "tokens_per_s": B * gen / dt, "top_k": gen_kw.get("top_k", "default"),
               "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
               "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2 ** 30}
        log(f"decode batch {B}: {gen} new tokens in {dt:.2f} s = {rec['tokens_per_s']:.1f} tok/s")
        out.append(rec)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompts", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="gemm,train,decode")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile-warmup", type=int, default=3)
    ap.add_argument("--compile-steps", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--decode-batches", default="1,64")
    ap.add_argument("--gemm-reps", type=int, default=20)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    log(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}")
    rc = 0
    for part in a.parts.split(","):
        t0 = time.perf_counter()
        try:
            if part == "gemm":
                recs = [gemm_ceiling(a.gemm_reps)]
            elif part == "train":
                recs = [train(a.config, a.batch, a.seq, a.warmup, a.steps, False)]
            elif part == "train_compile":
                recs = [train(a.config, a.batch, a.seq, a.compile_warmup, a.compile_steps, True)]
            elif part == "decode":
                recs = decode(a.config, a.prompts, a.new_tokens, [int(b) for b in a.decode_batches.split(",")])
            else:
                raise SystemExit(f"unknown part {part}")
        except Exception as e:  # report and go on with the next part
            import traceback
            traceback.print_exc()
            recs, rc = [{"part": part, "error": f"{type(e).__name__}: {e}"[:500]}], 1
        for r in recs:
            r["part_wall_s"] = time.perf_counter() - t0
            emit(a.out, r)
        torch.cuda.empty_cache()
    return rc


if __name__ == "__main__":
    sys.exit(main())
