#!/usr/bin/env bash
# session 8 call 6 (final): the dispatch prefetch's parity test and a batch-1 A/B against 9bc9251's ds-rollout, then
# the whole bench (run_bench.sh) on whichever ds-rollout was faster
set -u
D=.device/s8
B=$(mktemp -d) && tar xJf $D/bundle.tar.xz -C $B
xz -dc $D/old-ds-rollout.xz > $B/bin/old-ds-rollout && chmod +x $B/bin/old-ds-rollout
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s]"; }
mkdir -p $OUT/ab
timeout 60 $B/run ds_test_gpu_moe "moe_dispatch_forward: the fused kernel gives the bits of the four CUDA ops it replaces" >$OUT/ab/dispatch_test.txt 2>&1
echo "$(el) dispatch test rc=$? $(tail -2 $OUT/ab/dispatch_test.txt | tr '\n' ' ')"
W=$(mktemp -d)
$B/run ds-pretrain --device cuda --precision bf16 --config bench/gpu/v3_bench_config.json -i $D/corpus.jsonl \
  --tokenizer $D/tok -o $W/ck --seq-len 128 --batch-size 2 --max-steps 1 --log-level warn
head -1 $D/prompts64.jsonl >$W/p1.jsonl; head -5 $D/prompts64.jsonl >$W/p5.jsonl
ro() {  # ro BIN PROMPTS -> decode seconds at batch 1
  $B/run $1 --device cuda --precision bf16 --ckpt $W/ck -i $W/$2.jsonl -o $W/r_$1_$2.jsonl -n 1 --max-batch 1 \
    --template raw --ignore-eos --temperature 1 --max-new-tokens 256 --max-context 512 --seed 7 2>&1 | grep -o "decode [0-9.]* s" | grep -o "[0-9.]*"
}
declare -A sum=([old-ds-rollout]=0 [ds-rollout]=0)
for r in 1 2; do
  for bin in old-ds-rollout ds-rollout; do
    a=$(ro $bin p1); b=$(ro $bin p5); v=$(python3 -c "print(round(1024/($b-$a)))")
    sum[$bin]=$(( ${sum[$bin]} + v ))
    echo "$(el) b1 [$bin] decode n1 $a s, n5 $b s, warm $v tok/s" | tee -a $OUT/ab/ab.txt
  done
done
cmp -s $W/r_old-ds-rollout_p5.jsonl $W/r_ds-rollout_p5.jsonl && echo "old and new: identical JSONL (p5)" | tee -a $OUT/ab/ab.txt
if [ ${sum[ds-rollout]} -lt ${sum[old-ds-rollout]} ]; then
  echo "the bench runs 9bc9251's ds-rollout (faster here)" | tee -a $OUT/ab/ab.txt
  cp $B/bin/old-ds-rollout $B/bin/ds-rollout
  DB=$(mktemp -d); cp -r $D/tok $D/corpus.jsonl $D/prompts64.jsonl $D/sft $DB/
  (cd $B && tar cf - run bin lib | xz -1 -T16 > $DB/bundle.tar.xz); D=$DB
fi
rm -f $B/bin/old-ds-rollout
echo "$(el) bench"
BENCH_BUDGET_S=380 bash bench/gpu/run_bench.sh $D $OUT/full 2>&1 | tail -5
cat $OUT/full/summary.txt; echo "$(el) done"
