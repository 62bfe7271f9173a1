#!/bin/bash
# Second GPU session: exact resume on the GPU (f32 and bf16: 6 steps straight vs 3 + --resume 3), ds-sft on the GPU
# (f32 and bf16) from the CPU-trained base checkpoint (CPU reference curve made beforehand: data/sft_cpu.jsonl).
set -u
B=$(mktemp -d) && tar xJf .device/model/bundle.tar.xz -C $B
R=$B/run
export OPENBLAS_CORETYPE=Haswell OMP_WAIT_POLICY=passive
L=$OUT/log.txt
t0=$(date +%s)
st() { echo "== [$(( $(date +%s) - t0 ))s] $*" | tee -a $L; }
cd .device/model/data
W=$(mktemp -d)
P=(-i corpus.jsonl --tokenizer tok --preset small --seq-len 128 --batch-size 8 --lr 2e-3 --warmup 2 --log-level warn --seed 7 --device cuda --eval-batches 2 --max-steps 6)
for prec in f32 bf16; do
  st "resume $prec"
  timeout 60 $R ds-pretrain "${P[@]}" --precision $prec -o $W/a_$prec --metrics $W/a_$prec.jsonl >> $L 2>&1; echo "rc=$?" >> $L
  timeout 60 $R ds-pretrain "${P[@]}" --precision $prec -o $W/b_$prec --metrics $W/b_$prec.jsonl --stop-at-step 3 >> $L 2>&1; echo "rc=$?" >> $L
  timeout 60 $R ds-pretrain "${P[@]}" --precision $prec -o $W/b_$prec --metrics $W/b_$prec.jsonl --resume >> $L 2>&1; echo "rc=$?" >> $L
  cmp $W/a_$prec/model.safetensors $W/b_$prec/model.safetensors >> $L 2>&1 && echo "$prec: final weights identical" >> $L
  cmp $W/a_$prec/optimizer.safetensors $W/b_$prec/optimizer.safetensors >> $L 2>&1 && echo "$prec: optimizer state identical" >> $L
  python3 - $W/a_$prec.jsonl $W/b_$prec.jsonl $prec >> $L 2>&1 <<'PY'
import json, sys
def losses(p): return [(r["step"], r["loss"]) for r in map(json.loads, open(p)) if "loss" in r]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
print(sys.argv[3], "straight", a); print(sys.argv[3], "resumed ", b); print(sys.argv[3], "losses identical:", a == b)
PY
  cp $W/a_$prec.jsonl $OUT/resume_straight_$prec.jsonl
done
S=(-i sft.jsonl --init-from base --overwrite --max-steps 10 --batch-size 8 --seq-len 256 --lr 1e-3 --warmup 2 --seed 7 --log-level warn --device cuda)
for prec in f32 bf16; do
  st "sft $prec"
  timeout 90 $R ds-sft "${S[@]}" --precision $prec -o $W/sft_$prec --metrics $OUT/sft_$prec.jsonl >> $L 2>&1; echo "rc=$?" >> $L
done
st "done"
