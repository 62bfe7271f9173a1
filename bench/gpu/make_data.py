#!/usr/bin/env python3
"""Makes the DATA_DIR of bench/gpu/run_bench.sh (everything but the program bundle), on the build machine.

  bench/gpu/make_data.py --tokenize build/cmd/ds-tokenize/ds-tokenize --out .device/bench
      [--sft-from DIR | --sft-make build/cmd/ds-pretrain/ds-pretrain build/cmd/ds-sft/ds-sft --sft-curve FILE]

  tok/             a 32000-piece ds-tokenize BPE tokenizer (the model's vocabulary, so that every id the model
                   samples decodes) trained on 600 documents of synthetic text: 1,500 words each drawn with a
                   Zipf-like weight 1/(rank + 10) from a fixed lexicon of 60,000 random lower-case words (2-9 letters)
  corpus.jsonl     160 more such documents (about 309k tokens): ds-pretrain's training text
  prompts64.jsonl  64 prompts whose raw-template rendering (bos + text) is exactly 128 tokens, with those ids
                   ({"id", "prompt", "ids"}): ds-rollout renders "prompt", transformers decodes "ids"
  sft/             the inputs of the ds-sft GPU check: with --sft-from DIR, DIR/base (a checkpoint) and DIR/sft.jsonl
                   copied; with --sft-make PRETRAIN SFT (the two programs), made here: sft.jsonl (400 arithmetic
                   prompt/completion pairs with a short <think> trace), tok/ (a 4096-piece tokenizer of corpus.jsonl
                   and the pairs) and base/ (ds-pretrain --preset small on corpus.jsonl with that tokenizer, 20
                   steps on the CPU, one thread; ~20 MB), then ds-sft on the CPU with run_bench.sh's command writes
                   the reference curve to --sft-curve (bench/gpu_model/sft_cpu.jsonl is this curve)
Seeded: the same files every time (python's random with fixed seeds; ds-tokenize on one thread).
"""
import argparse
import json
import os
import random
import shutil
import subprocess


def lexicon():
    r = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lex = ["".join(r.choice(letters) for _ in range(r.randint(2, 9))) for _ in range(60000)]
    return lex, [1.0 / (i + 10) for i in range(len(lex))]


# run_bench.sh's ds-sft command, less the device (and, there, the output and metrics paths).
SFT_ARGS = ["--overwrite", "--max-steps", "10", "--batch-size", "8", "--seq-len", "256", "--lr", "1e-3",
            "--warmup", "2", "--seed", "7", "--log-level", "warn"]


def make_sft(out, tokenize, pretrain, sft, curve):
    d = os.path.join(out, "sft")
    os.makedirs(d, exist_ok=True)
    r = random.Random(13)
    pairs = []
    for _ in range(400):
        x, y = r.randint(10, 999), r.randint(10, 999)
        op = r.choice("+-")
        z = x + y if op == "+" else x - y
        pairs.append({"prompt": f"What is {x} {op} {y}?",
                      "completion": f"<think>\n{x} {op} {y} = {z}\n</think>\n\n{z}"})
    with open(os.path.join(d, "sft.jsonl"), "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    # The check's own 4096-piece tokenizer (the small preset's vocabulary), on the corpus and the pairs: with the
    # bench's 32000 pieces the base checkpoint was 117 MB, over a device call's 64 MiB carry; now ~20 MB.
    tok_corpus = os.path.join(d, "tokenizer_corpus.jsonl")
    with open(tok_corpus, "w") as f, open(os.path.join(out, "corpus.jsonl")) as c:
        f.write(c.read())
        for p in pairs:
            f.write(json.dumps({"text": p["prompt"] + "\n" + p["completion"]}) + "\n")
    subprocess.run([tokenize, "--threads", "1", "--log-level", "warn", "train", "-i", tok_corpus, "-o",
                    os.path.join(d, "tok"), "--vocab-size", "4096"], check=True)
    os.remove(tok_corpus)
    subprocess.run([pretrain, "-i", os.path.join(out, "corpus.jsonl"), "--tokenizer", os.path.join(d, "tok"),
                    "-o", os.path.join(d, "base"), "--overwrite", "--preset", "small", "--seq-len", "128",
                    "--batch-size", "8", "--max-steps", "20", "--lr", "2e-3", "--warmup", "5", "--seed", "7",
                    "--threads", "1", "--log-level", "warn"], check=True)
    os.remove(os.path.join(d, "base", "optimizer.safetensors"))  # --init-from reads the weights and tokenizer only
    if curve:
        if os.path.exists(curve):
            os.remove(curve)  # ds-sft --metrics appends
        subprocess.run([sft, "-i", os.path.join(d, "sft.jsonl"), "--init-from", os.path.join(d, "base"), *SFT_ARGS,
                        "--threads", "1", "-o", os.path.join(out, "sft_cpu_ck"), "--metrics", curve], check=True)
        shutil.rmtree(os.path.join(out, "sft_cpu_ck"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenize", required=True, help="the ds-tokenize program")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sft-from", default="")
    ap.add_argument("--sft-make", nargs=2, metavar=("PRETRAIN", "SFT"), default=None)
    ap.add_argument("--sft-curve", default="", help="with --sft-make: where ds-sft's CPU metrics go")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    lex, w = lexicon()

    tok_corpus = os.path.join(a.out, "tokenizer_corpus.jsonl")
    with open(tok_corpus, "w") as f:
        rr = random.Random(7)  # the lexicon's stream again; the tokenizer's documents continue it
        letters = "abcdefghijklmnopqrstuvwxyz"
        _ = ["".join(rr.choice(letters) for _ in range(rr.randint(2, 9))) for _ in range(60000)]
        for _ in range(600):
            f.write(json.dumps({"text": " ".join(rr.choices(lex, weights=w, k=1500))}) + "\n")
    tok = os.path.join(a.out, "tok")
    subprocess.run([a.tokenize, "--threads", "1", "--log-level", "warn", "train", "-i", tok_corpus, "-o", tok,
                    "--vocab-size", "32000"], check=True)
    os.remove(tok_corpus)

    r = random.Random(11)
    texts = [r.choices(lex, weights=w, k=160) for _ in range(110)]
    lines = [(ti, " ".join(words[:k])) for ti, words in enumerate(texts) for k in range(50, 140)]
    inp = "".join(json.dumps({"text": t}) + "\n" for _, t in lines)
    out = subprocess.run([a.tokenize, "--log-level", "warn", "encode", "--tokenizer", tok, "--add-bos", "-i", "-",
                          "-o", "-"], input=inp, capture_output=True, text=True, check=True).stdout.splitlines()
    best = {}
    for (ti, t), o in zip(lines, out):
        ids = json.loads(o)["ids"]
        if len(ids) == 128 and ti not in best:
            best[ti] = (t, ids)
    sel = list(best.values())[:64]
    if len(sel) < 64:
        raise SystemExit(f"only {len(sel)} texts with a 128-token prefix")
    with open(os.path.join(a.out, "prompts64.jsonl"), "w") as f:
        for i, (t, ids) in enumerate(sel):
            f.write(json.dumps({"id": f"b{i}", "prompt": t, "ids": ids}) + "\n")
    with open(os.path.join(a.out, "corpus.jsonl"), "w") as f:
        for _ in range(160):
            f.write(json.dumps({"text": " ".join(r.choices(lex, weights=w, k=1500))}) + "\n")

    if a.sft_make:
        make_sft(a.out, a.tokenize, a.sft_make[0], a.sft_make[1], a.sft_curve)
    elif a.sft_from:
        os.makedirs(os.path.join(a.out, "sft"), exist_ok=True)
        shutil.copytree(os.path.join(a.sft_from, "base"), os.path.join(a.out, "sft", "base"), dirs_exist_ok=True)
        shutil.copy(os.path.join(a.sft_from, "sft.jsonl"), os.path.join(a.out, "sft", "sft.jsonl"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
