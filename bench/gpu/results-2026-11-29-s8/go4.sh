#!/usr/bin/env bash
# session 8 call 4: row kernels that load first (norms, MoE combine, MLA latent, MLA split combine): GPU tests,
# memcheck, batch-1/64 A/B against the previous ds-rollout (old-ds-rollout.xz with DS_MLA_FOLD=0), a timeline
set -u
B=$(mktemp -d) && tar xJf .device/s8/bundle.tar.xz -C $B
xz -dc .device/s8/old-ds-rollout.xz > $B/bin/old-ds-rollout && chmod +x $B/bin/old-ds-rollout
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s]"; }
mkdir -p $OUT/logs
for t in "ds_test_gpu_dense [norm],[matmul]" "ds_test_gpu_moe [dispatch]" "ds_test_gpu_attention [mla_decode]" "ds_test_gpu_model"; do
  set -- $t; n=$1; shift
  timeout 150 $B/run $n "$@" >$OUT/logs/$n.txt 2>&1; echo "$(el) $n $* rc=$? $(tail -2 $OUT/logs/$n.txt | tr '\n' ' ')"
  grep -a -B3 -A14 "FAILED" $OUT/logs/$n.txt | head -40
  grep -a "engine " $OUT/logs/$n.txt
done
for t in "ds_test_gpu_dense [norm]" "ds_test_gpu_moe moe permute / unpermute parity" "ds_test_gpu_attention [mla_decode]"; do
  set -- $t; n=$1; shift
  timeout 120 compute-sanitizer --tool memcheck $B/bin/$n "$*" >$OUT/logs/memcheck_$n.txt 2>&1 || true
  echo "$(el) memcheck $n $*: $(grep -a "ERROR SUMMARY" $OUT/logs/memcheck_$n.txt | tail -1) $(tail -1 $OUT/logs/memcheck_$n.txt)"
done
W=$(mktemp -d); D=.device/s8
$B/run ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i $D/corpus.jsonl \
  --tokenizer $D/tok -o $W/ck --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
head -1 $D/prompts64.jsonl >$W/p1.jsonl; head -5 $D/prompts64.jsonl >$W/p5.jsonl
cat $D/prompts64.jsonl $D/prompts64.jsonl >$W/p128.jsonl; cp $D/prompts64.jsonl $W/p64.jsonl
ro() {  # ro BIN PROMPTS MAXBATCH -> decode seconds
  $B/run $1 --device cuda --precision bf16 --ckpt $W/ck -i $W/$2.jsonl -o $W/r_$1_$2.jsonl -n 1 --max-batch $3 \
    --template raw --ignore-eos --temperature 1 --max-new-tokens 256 --max-context 512 --seed 7 2>&1 | grep -o "decode [0-9.]* s" | grep -o "[0-9.]*"
}
for r in 1 2 3; do
for bin in old-ds-rollout ds-rollout; do
  a=$(DS_MLA_FOLD=0 bash -c "$(declare -f ro); B=$B W=$W; ro $bin p1 1"); b=$(DS_MLA_FOLD=0 bash -c "$(declare -f ro); B=$B W=$W; ro $bin p5 1")
  echo "$(el) b1 [$bin] decode n1 $a s, n5 $b s, warm $(python3 -c "print(round(1024/($b-$a)))") tok/s"
done
done
cmp -s $W/r_old-ds-rollout_p5.jsonl $W/r_ds-rollout_p5.jsonl && echo "old and new: identical JSONL (p5)" || echo "old and new JSONL differ"
for bin in old-ds-rollout ds-rollout old-ds-rollout ds-rollout; do
  a=$(DS_MLA_FOLD=0 bash -c "$(declare -f ro); B=$B W=$W; ro $bin p64 64"); b=$(DS_MLA_FOLD=0 bash -c "$(declare -f ro); B=$B W=$W; ro $bin p128 64")
  echo "$(el) b64 [$bin] decode n64 $a s, n128 $b s, warm $(python3 -c "print(round(16384/($b-$a)))") tok/s"
done
BATCH=1 bash bench/gpu/trace_decode.sh .device/s8 $OUT/trace 2>&1 | head -45; echo "$(el)"
cd $OUT && xz -9 trace/*.tsv; rm -f trace/kernel_trace.so; tar cJf logs.tar.xz logs 2>/dev/null; rm -rf logs
