#!/usr/bin/env bash
# session 8 call 1: folded MLA projections (q_fold / o_fold, RoPE in the decode kernel): GPU tests, memcheck,
# decode A/B (DS_MLA_FOLD=0 vs default) at batch 1 and 64
set -u
B=$(mktemp -d) && tar xJf .device/s8/bundle.tar.xz -C $B
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s]"; }
mkdir -p $OUT/logs
for t in "ds_test_gpu_attention [mla_decode]" "ds_test_gpu_model"; do
  set -- $t; n=$1; shift
  timeout 150 $B/run $n "$@" >$OUT/logs/$n.txt 2>&1; echo "$(el) $n $* rc=$? $(tail -2 $OUT/logs/$n.txt | tr '\n' ' ')"
  grep -a -B3 -A14 "FAILED" $OUT/logs/$n.txt | head -40
  grep -a "engine " $OUT/logs/$n.txt
done
timeout 150 compute-sanitizer --tool memcheck $B/bin/ds_test_gpu_attention "mla_decode_rope parity: RoPE of q_pe inside the decode kernel" >$OUT/logs/memcheck.txt 2>&1 || true
echo "$(el) memcheck rope: $(grep -a "ERROR SUMMARY" $OUT/logs/memcheck.txt | tail -1) $(tail -1 $OUT/logs/memcheck.txt)"
W=$(mktemp -d); D=.device/s8
$B/run ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i $D/corpus.jsonl \
  --tokenizer $D/tok -o $W/ck --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
head -1 $D/prompts64.jsonl >$W/p1.jsonl; head -5 $D/prompts64.jsonl >$W/p5.jsonl
cat $D/prompts64.jsonl $D/prompts64.jsonl >$W/p128.jsonl; cp $D/prompts64.jsonl $W/p64.jsonl
ro() {  # ro PROMPTS MAXBATCH -> decode seconds
  $B/run ds-rollout --device cuda --precision bf16 --ckpt $W/ck -i $W/$1.jsonl -o $W/r_$1.jsonl -n 1 --max-batch $2 \
    --template raw --ignore-eos --temperature 1 --max-new-tokens 256 --max-context 512 --seed 7 2>&1 | grep -o "decode [0-9.]* s" | grep -o "[0-9.]*"
}
for cfg in "" "DS_MLA_FOLD=0" "" "DS_MLA_FOLD=0"; do
  a=$(env $cfg bash -c "$(declare -f ro); B=$B W=$W; ro p1 1"); b=$(env $cfg bash -c "$(declare -f ro); B=$B W=$W; ro p5 1")
  echo "$(el) b1 [$cfg] decode n1 $a s, n5 $b s, warm $(python3 -c "print(round(1024/($b-$a)))") tok/s"
  cp $W/r_p5.jsonl $W/out_${cfg:-fold}.jsonl
done
python3 - $W/out_fold.jsonl $W/out_DS_MLA_FOLD=0.jsonl <<'PY'
import json,sys
a=[json.loads(l) for l in open(sys.argv[1])]; b=[json.loads(l) for l in open(sys.argv[2])]
for x,y in zip(a,b):
    ka=[k for k in x if isinstance(x[k],list)]
    print("keys",list(x.keys())[:12])
    break
def toks(r):
    for k in ("tokens","completion_ids","token_ids","ids"):
        if k in r: return r[k]
    return r.get("completion","")
for x,y in zip(a,b):
    ta,tb=toks(x),toks(y); n=0
    while n<min(len(ta),len(tb)) and ta[n]==tb[n]: n+=1
    print("fold vs unfolded: equal prefix",n,"of",len(ta))
PY
for cfg in "" "DS_MLA_FOLD=0" ""; do
  a=$(env $cfg bash -c "$(declare -f ro); B=$B W=$W; ro p64 64"); b=$(env $cfg bash -c "$(declare -f ro); B=$B W=$W; ro p128 64")
  echo "$(el) b64 [$cfg] decode n64 $a s, n128 $b s, warm $(python3 -c "print(round(16384/($b-$a)))") tok/s"
done
cd $OUT && tar cJf logs.tar.xz logs 2>/dev/null; rm -rf logs
