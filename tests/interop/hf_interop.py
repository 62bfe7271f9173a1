#!/usr/bin/env python3
"""Interoperability of ds with an independent implementation: Hugging Face transformers' DeepseekV3ForCausalLM.

Run on the GPU machine (python3 with torch + transformers; see tests/interop/README.md):
    python3 tests/interop/hf_interop.py --run RUNNER --out DIR
RUNNER runs a ds program (the device bundle's `run` launcher, or an empty string when ds-* are on PATH).

Checks (all in float32 on the CPU, so both sides are exact IEEE fp32 and deterministic):
  1. HF -> ds: a random DeepseekV3ForCausalLM (q_lora, YaRN, 1 dense + 2 MoE layers, 8 experts in 4 groups,
     top-2 of 2 groups, a shared expert, non-zero e_score_correction_bias) saved by save_pretrained loads in
     ds, and ds's logits equal HF's (max |diff| / max |logit| < 1e-4).
  2. ds -> HF: a checkpoint written by ds-pretrain (HF-format config.json given to --config, a few training
     steps, bias updates on) loads in transformers with no missing or mismatched tensors, and the logits agree.
  3. The group-masking divergence of MODEL.md §3.6: older transformers masked dropped expert groups with 0.0
     instead of model.py's -inf, which differs only when biased scores go negative. Checks 1-2 keep them
     positive (and assert it); check 3 makes them all negative (bias in [-1, -0.3]) so that 0.0-masking would
     route to dropped groups. The script reads which masking the installed transformers uses and requires
     agreement when it is -inf (transformers 5.17 is); with 0.0 it reports the error without failing.
Prints one JSON summary line and exits non-zero when a check fails.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

TOL = 1e-4


def make_config(vocab, eps=1e-6, mtp=0):
    kw = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
              kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8,
              n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2, first_k_dense_replace=1,
              routed_scaling_factor=2.5, norm_topk_prob=True, max_position_embeddings=256, rms_norm_eps=eps,
              tie_word_embeddings=False, rope_interleave=True, attention_bias=False, bos_token_id=0,
              eos_token_id=1, num_nextn_predict_layers=mtp)
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32.0,
            "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "rope_theta": 10000.0}
    try:
        return DeepseekV3Config(rope_parameters=rope, **kw)
    except TypeError:  # older transformers: rope_scaling + rope_theta
        r = dict(rope)
        theta = r.pop("rope_theta")
        r["type"] = r.pop("rope_type")
        return DeepseekV3Config(rope_scaling=r, rope_theta=theta, **kw)


def moe_blocks(model):
    return [l.mlp for l in model.model.layers if hasattr(l.mlp, "gate")]


def randomize(model, bias_lo, bias_hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))
        for m in moe_blocks(model):
            b = m.gate.e_score_correction_bias
            b.copy_(bias_lo + (bias_hi - bias_lo) * torch.rand(b.shape, generator=g))


def min_biased_score(model, ids_list):
    """The smallest sigmoid(router logit) + bias over all tokens and MoE layers (via forward hooks)."""
    lows = []

    def hook(mod, inp, out):
        logits = out[0] if isinstance(out, tuple) else out
        lows.append(float((logits.float().sigmoid() + mod.e_score_correction_bias).min()))

    hs = [m.gate.register_forward_hook(hook) for m in moe_blocks(model)]
    with torch.no_grad():
        for ids in ids_list:
            model(torch.tensor([ids]))
    for h in hs:
        h.remove()
    return min(lows)


def hf_logits(model, ids_list):
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float() for ids in ids_list]


def ds(runner, *args):
    cmd = shlex.split(runner) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}")
    return r


def ds_logits(runner, ckpt, ids_list, work):
    inp = os.path.join(work, "ids.jsonl")
    with open(inp, "w") as f:
        for ids in ids_list:
            f.write(json.dumps({"ids": ids}) + "\n")
    out = os.path.join(work, "logits.jsonl")
    ds(runner, "ds-pretrain", "--dump-logits", out, "--ckpt", ckpt, "-i", inp, "--threads", "4")
    with open(out) as f:
        return [torch.tensor(json.loads(l)["logits"]) for l in f]


def rel_err(a_list, b_list):
    worst = 0.0
    for a, b in zip(a_list, b_list):
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="", help="launcher prefix for ds programs")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(4)
    res = {"transformers": __import__("transformers").__version__, "torch": torch.__version__}
    ok = True
    vocab = 300
    gen = torch.Generator().manual_seed(1)
    ids_list = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (17, 40)]

    # 1. HF -> ds
    cfg = make_config(vocab)
    model = DeepseekV3ForCausalLM(cfg).float().eval()
    randomize(model, 0.0, 0.1)
    hf_dir = os.path.join(a.out, "hf_random")
    model.save_pretrained(hf_dir, safe_serialization=True)
    res["hf_to_ds_min_biased_score"] = min_biased_score(model, ids_list)
    e1 = rel_err(ds_logits(a.run, hf_dir, ids_list, a.out), hf_logits(model, ids_list))
    res["hf_to_ds_rel_err"] = e1
    ok &= e1 < TOL and res["hf_to_ds_min_biased_score"] > 0
    res["latent_norm_eps_hf"] = float(make_and_eps())

    # 3. the 0.0-vs-(-inf) group masking divergence
    model3 = DeepseekV3ForCausalLM(cfg).float().eval()
    randomize(model3, -1.0, -0.3, seed=3)
    d3 = os.path.join(a.out, "hf_negative_bias")
    model3.save_pretrained(d3, safe_serialization=True)
    e3 = rel_err(ds_logits(a.run, d3, ids_list, a.out), hf_logits(model3, ids_list))
    res["negative_bias_min_biased_score"] = min_biased_score(model3, ids_list)
    res["negative_bias_rel_err"] = e3
    import inspect
    router_src = inspect.getsource(type(moe_blocks(model3)[0].gate))
    res["hf_router_masks_with"] = "-inf" if 'float("-inf")' in router_src else "0.0" if "0.0)" in router_src else "?"
    # A transformers that masks with 0.0 routes some of these tokens to dropped groups: it is then expected to
    # differ from ds (which follows model.py), and the check is skipped with a note instead of failing.
    if res["hf_router_masks_with"] == "-inf":
        ok &= e3 < TOL

    # 2. ds -> HF
    corpus = os.path.join(a.out, "corpus.jsonl")
    g = torch.Generator().manual_seed(5)
    words = ["alpha", "beta", "gamma", "delta", "12", "345", "+", "=", "the", "answer", "is", "think"]
    with open(corpus, "w") as f:
        for i in range(400):
            n = int(torch.randint(5, 30, (1,), generator=g))
            f.write(json.dumps({"text": " ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g))}) + "\n")
    tok = os.path.join(a.out, "tok")
    ds(a.run, "ds-tokenize", "train", "-i", corpus, "-o", tok, "--vocab-size", "300")
    cfg2_dir = os.path.join(a.out, "cfg2")
    make_config(vocab, mtp=1).save_pretrained(cfg2_dir)
    ck = os.path.join(a.out, "ds_ckpt")
    ds(a.run, "ds-pretrain", "-i", corpus, "-o", ck, "--config", os.path.join(cfg2_dir, "config.json"),
       "--tokenizer", tok, "--seq-len", "32", "--batch-size", "4", "--max-steps", "6", "--lr", "3e-3",
       "--bias-update-speed", "0.01", "--threads", "4", "--overwrite", "--log-level", "warn")
    model2, info = DeepseekV3ForCausalLM.from_pretrained(ck, torch_dtype=torch.float32, output_loading_info=True)
    model2 = model2.float().eval()
    res["ds_to_hf_missing"] = list(info.get("missing_keys", []))
    res["ds_to_hf_mismatched"] = [str(x) for x in info.get("mismatched_keys", [])]
    unexpected = sorted(info.get("unexpected_keys", []))
    res["ds_to_hf_unexpected_non_mtp"] = [k for k in unexpected if not k.startswith("model.layers.3.")]
    res["ds_to_hf_min_biased_score"] = min_biased_score(model2, ids_list)
    e2 = rel_err(ds_logits(a.run, ck, ids_list, a.out), hf_logits(model2, ids_list))
    res["ds_to_hf_rel_err"] = e2
    ok &= (e2 < TOL and not res["ds_to_hf_missing"] and not res["ds_to_hf_mismatched"]
           and not res["ds_to_hf_unexpected_non_mtp"] and res["ds_to_hf_min_biased_score"] > 0)
    res["ok"] = bool(ok)
    print(json.dumps(res))
    with open(os.path.join(a.out, "interop.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0 if ok else 1


def make_and_eps():
    """The eps transformers gives the latent norms when rms_norm_eps is not 1e-6 (ds uses 1e-6, as model.py)."""
    m = DeepseekV3ForCausalLM(make_config(50, eps=1e-5))
    n = m.model.layers[0].self_attn.kv_a_layernorm
    return getattr(n, "variance_epsilon", getattr(n, "eps", float("nan")))


if __name__ == "__main__":
    sys.exit(main())
