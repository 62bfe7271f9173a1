#!/usr/bin/env bash
# Golden CLI test of ds-pretrain: help/version and usage errors (exit 2), a tiny training run and its checkpoint,
# metrics and expert statistics, bad input (exit 3, one "file:line" message, no checkpoint directory left),
# refusing to clobber a checkpoint, kill -9 + --resume reproducing an uninterrupted run loss for loss,
# --dump-logits, --stop-at-step + --resume, --optim-state bf16 (saved in bf16, resumed exactly).
# Usage: ds_pretrain.sh PATH/TO/ds-pretrain PATH/TO/ds-tokenize
# Run with OMP_WAIT_POLICY=passive on shared machines (spinning OpenMP threads starve each other).
set -u
BIN=${1:?usage: ds_pretrain.sh PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
TOK=${2:?usage: ds_pretrain.sh PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_pretrain_cli.XXXXXX")
bg_pid=
cleanup() { [ -n "$bg_pid" ] && kill -9 "$bg_pid" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fails=0
SECONDS=0
. "$(dirname "$0")/lib.sh"

no_tmp_dirs() { ! compgen -G "$1.tmp-*" >/dev/null && ! compgen -G "$1.old-*" >/dev/null; }

# A deterministic corpus of 240 short documents (plain integer arithmetic, no awk rand()).
awk 'BEGIN {
  n = split("the model router expert token latent attention loss train reason answer check key value layer", w, " ")
  for (i = 0; i < 240; i++) {
    s = ""; len = 8 + (i * 7) % 20
    for (j = 0; j < len; j++) s = s w[1 + (i * 13 + j * j * 5 + j * 3) % n] " "
    a = (i * 37) % 900; b = (i * 91 + 17) % 900
    printf("{\"text\":\"%s%d + %d = %d\",\"id\":%d}\n", s, a, b, a + b, i)
  }
}' >"$T/corpus.jsonl"
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok" --vocab-size 300 --threads 1 --log-level warn ||
  { echo "FAIL: ds-tokenize train (setup)"; exit 1; }
COMMON=(--threads 1 --log-level warn)
TINY=(--tokenizer "$T/tok" --preset tiny --seq-len 32 --batch-size 4 "${COMMON[@]}")

# ---------------------------------------------------------------------------------------------------------
# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
contains "$T/out" "--max-steps" "--help prints the options on stdout"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-pretrain " "--version names the program"
expect 2 "unknown option" -- "$BIN" --no-such-option -i "$T/corpus.jsonl" -o "$T/u1"
contains "$T/err" "ds-pretrain: error:" "usage error message"
expect 2 "missing -i" -- "$BIN" -o "$T/u2" "${TINY[@]}"
contains "$T/err" "ds-pretrain: error: -i/--input is required" "missing -i message"
expect 2 "missing -o" -- "$BIN" -i "$T/corpus.jsonl" "${TINY[@]}"
expect 2 "--resume without a checkpoint" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/u3" --resume "${COMMON[@]}"
expect 2 "--seq-len beyond max_position_embeddings" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/u4" "${TINY[@]}" --seq-len 100000
check "usage errors leave no output directory" eval 'no_leftovers "$T/u1" && no_leftovers "$T/u2" && no_leftovers "$T/u3" && no_leftovers "$T/u4"'

# ---------------------------------------------------------------------------------------------------------
# A tiny training run: checkpoint files, metrics, expert statistics
expect 0 "tiny training run" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/ck" "${TINY[@]}" --max-steps 10 \
  --metrics "$T/m.jsonl" --expert-stats "$T/e.jsonl"
check "checkpoint directory complete" complete_ckpt "$T/ck"
check "no temporary directories left" no_tmp_dirs "$T/ck"
check "trainer_state.json step 10" test "$(json_int "$T/ck/trainer_state.json" step)" = 10
check "metrics: one record per step 1..10" test "$(field_by_step "$T/m.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "1 2 3 4 5 6 7 8 9 10 "
for k in loss main_loss mtp_loss lr grad_norm tokens tokens_per_s; do
  check "metrics: every step record has \"$k\"" test "$(field_by_step "$T/m.jsonl" "$k" | grep -c '[0-9]')" = 10
done
check "metrics: an eval_loss record" grep -q '^{"step":10,"eval_loss":[0-9]' "$T/m.jsonl"
topk=$(json_int "$T/ck/config.json" num_experts_per_tok)
# Every (step, layer) record's counts sum to batch * seq_len * top_k; every step has the same MoE layers.
expert_report=$(awk -v want=$((4 * 32 * topk)) '
  { if ($0 !~ /^\{"step":[0-9]+,"layer":[0-9]+,"counts":\[[0-9,]+\]\}$/) { bad++; next }
    s = $0; gsub(/[^0-9,]/, "", s); n = split(s, v, ",")  # step, layer, counts...
    step = v[1] + 0; layer = v[2]; sum = 0; for (i = 3; i <= n; i++) sum += v[i]
    if (sum != want) bad++
    per[step]++; layers[layer] = 1; if (step > maxstep) maxstep = step }
  END { nl = 0; for (l in layers) nl++
        for (s = 1; s <= maxstep; s++) if (per[s] != nl) bad++
        printf "%d steps, %d layers, %d bad\n", maxstep, nl, bad + 0 }' "$T/e.jsonl")
# MoE layers: the decoder layers after the first_k_dense_replace dense ones, plus the MTP layers.
moe_layers=$(($(json_int "$T/ck/config.json" num_hidden_layers) - $(json_int "$T/ck/config.json" first_k_dense_replace) +
  $(json_int "$T/ck/config.json" num_nextn_predict_layers)))
check "expert stats: counts sum to batch*seq_len*top_k per layer per step ($expert_report)" \
  test "$expert_report" = "10 steps, $moe_layers layers, 0 bad"

# ---------------------------------------------------------------------------------------------------------
# Bad input: exit 3, a single "ds-pretrain: error: ... (file[:line])" line, no checkpoint directory
bad_input() {  # bad_input DESCRIPTION OUTPUT WHERE -- CMD...
  local what=$1 out=$2 where=$3; shift 3
  expect 3 "$what" "$@"
  check "$what: one error line naming $where" eval \
    '[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^ds-pretrain: error: .*$where" "$T/err"'
  check "$what: no output left behind" no_leftovers "$out"
}
bad_input "malformed JSONL line" "$T/b1" "pretrain_bad_json.jsonl:3)" -- \
  "$BIN" -i "$FIX/pretrain_bad_json.jsonl" -o "$T/b1" "${TINY[@]}" --max-steps 2
bad_input "wrong field type" "$T/b2" "pretrain_bad_type.jsonl:2)" -- \
  "$BIN" -i "$FIX/pretrain_bad_type.jsonl" -o "$T/b2" "${TINY[@]}" --max-steps 2
: >"$T/empty.jsonl"
bad_input "empty input file" "$T/b3" "empty.jsonl)" -- \
  "$BIN" -i "$T/empty.jsonl" -o "$T/b3" "${TINY[@]}" --max-steps 2
bad_input "missing input file" "$T/b4" "does-not-exist.jsonl" -- \
  "$BIN" -i "$T/does-not-exist.jsonl" -o "$T/b4" "${TINY[@]}" --max-steps 2
grep -v '"kv_lora_rank"' "$T/ck/config.json" >"$T/no_kv.json"
bad_input "config without kv_lora_rank" "$T/b5" "kv_lora_rank.*no_kv.json)" -- \
  "$BIN" -i "$T/corpus.jsonl" -o "$T/b5" --config "$T/no_kv.json" --tokenizer "$T/tok" --seq-len 32 \
  --batch-size 4 --max-steps 2 "${COMMON[@]}"
# a config.json with a larger vocab_size than the tokenizer's: the fresh model gets the tokenizer's size (rows the
# tokenizer cannot decode could still be sampled), a smaller one is an error
tok_vocab=$(json_int "$T/ck/config.json" vocab_size)
sed "s/\"vocab_size\": *[0-9]*/\"vocab_size\": $((tok_vocab + 77))/" "$T/ck/config.json" >"$T/big_vocab.json"
expect 0 "config with a padded vocab_size" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/padv" --config "$T/big_vocab.json" \
  --tokenizer "$T/tok" --seq-len 32 --batch-size 4 --max-steps 1 "${COMMON[@]}"
check "the padded vocab_size is fitted to the tokenizer's" test "$(json_int "$T/padv/config.json" vocab_size)" = "$tok_vocab"
sed "s/\"vocab_size\": *[0-9]*/\"vocab_size\": $((tok_vocab - 1))/" "$T/ck/config.json" >"$T/small_vocab.json"
bad_input "config with a vocab_size below the tokenizer's" "$T/b7" "small_vocab.json)" -- \
  "$BIN" -i "$T/corpus.jsonl" -o "$T/b7" --config "$T/small_vocab.json" --tokenizer "$T/tok" --seq-len 32 \
  --batch-size 4 --max-steps 2 "${COMMON[@]}"
cp -r "$T/ck" "$T/cut"
truncate -s $(($(stat -c %s "$T/cut/model.safetensors") / 2)) "$T/cut/model.safetensors"
bad_input "--init-from a truncated model.safetensors" "$T/b6" "model.safetensors)" -- \
  "$BIN" -i "$T/corpus.jsonl" -o "$T/b6" --init-from "$T/cut" --seq-len 32 --batch-size 4 --max-steps 2 "${COMMON[@]}"
bad_input "--dump-logits with an out-of-range token id" "$T/logits_bad.jsonl" "pretrain_ids_bad.jsonl:2)" -- \
  "$BIN" --dump-logits "$T/logits_bad.jsonl" --ckpt "$T/ck" -i "$FIX/pretrain_ids_bad.jsonl" "${COMMON[@]}"

# ---------------------------------------------------------------------------------------------------------
# An existing checkpoint is never replaced without --resume or --overwrite
before=$(tree_sum "$T/ck"; stat -c %i "$T/ck")
expect 2 "existing checkpoint without --resume/--overwrite" -- \
  "$BIN" -i "$T/corpus.jsonl" -o "$T/ck" "${TINY[@]}" --max-steps 2
contains "$T/err" "--overwrite" "the refusal names --resume/--overwrite"
check "the existing checkpoint is untouched" test "$before" = "$(tree_sum "$T/ck"; stat -c %i "$T/ck")"
cp -r "$T/ck" "$T/ow"
expect 0 "--overwrite replaces it" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/ow" "${TINY[@]}" --max-steps 2 --overwrite
check "--overwrite: trainer_state.json step 2" test "$(json_int "$T/ow/trainer_state.json" step)" = 2

# ---------------------------------------------------------------------------------------------------------
# --dump-logits: one record per input line, logits of shape [len(ids)][vocab]
vocab=$(json_int "$T/ck/config.json" vocab_size)
expect 0 "--dump-logits" -- "$BIN" --dump-logits "$T/logits.jsonl" --ckpt "$T/ck" -i "$FIX/pretrain_ids.jsonl" "${COMMON[@]}"
shape_report=$(awk -v V="$vocab" '
  { ids = $0; sub(/.*"ids":\[/, "", ids); sub(/\].*/, "", ids); n = split(ids, tmp, ",")
    lg = $0; sub(/.*"logits":\[\[/, "", lg); sub(/\]\]\}$/, "", lg)
    rows = split(lg, row, /\],\[/); if (rows != n) bad++
    for (r = 1; r <= rows; r++) if (split(row[r], v, ",") != V) bad++ }
  END { printf "%d records, %d bad", NR, bad + 0 }' "$T/logits.jsonl")
check "--dump-logits: logits are [len(ids)][$vocab] ($shape_report)" test "$shape_report" = "3 records, 0 bad"
check "--dump-logits to stdout gives the same records" \
  eval '"$BIN" --dump-logits - --ckpt "$T/ck" -i "$FIX/pretrain_ids.jsonl" "${COMMON[@]}" 2>/dev/null | cmp -s - "$T/logits.jsonl"'

# ---------------------------------------------------------------------------------------------------------
# kill -9 in the middle of a run, --resume, and compare with the same run uninterrupted
KR=(--tokenizer "$T/tok" --preset tiny --seq-len 128 --batch-size 8 --max-steps 40 --save-every 5 "${COMMON[@]}")
"$BIN" -i "$T/corpus.jsonl" -o "$T/kr" "${KR[@]}" --metrics "$T/kr.jsonl" 2>"$T/kr.err" &
bg_pid=$!
while [ "$(step_records "$T/kr.jsonl")" -lt 12 ] && kill -0 "$bg_pid" 2>/dev/null; do sleep 0.02; done
kill -9 "$bg_pid" 2>/dev/null
wait "$bg_pid" 2>/dev/null
rc=$?
bg_pid=
killed_at=$(step_records "$T/kr.jsonl")
check "the run was killed mid-way (exit $rc after $killed_at of 40 steps)" test "$rc" -eq 137 -a "$killed_at" -lt 40
kstep=$(json_int "$T/kr/trainer_state.json" step)
check "after kill -9: trainer_state.json step ${kstep:-?} is a multiple of 5, >= 10" \
  test -n "$kstep" -a $((${kstep:-1} % 5)) -eq 0 -a "${kstep:-0}" -ge 10
check "after kill -9: the checkpoint directory is complete" complete_ckpt "$T/kr"
printf '{"step":%d,"loss":7.1' $((killed_at + 1)) >>"$T/kr.jsonl"  # as if the kill had torn a write
expect 0 "--resume to 40 steps" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/kr" --resume --seq-len 128 --batch-size 8 \
  --max-steps 40 --save-every 5 "${COMMON[@]}" --metrics "$T/kr.jsonl"
check "resumed: trainer_state.json step 40" test "$(json_int "$T/kr/trainer_state.json" step)" = 40
check "resumed: no temporary directories left" no_tmp_dirs "$T/kr"
check "resumed metrics: exactly one record per step 1..40" \
  test "$(field_by_step "$T/kr.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 40) "
expect 0 "the same 40 steps uninterrupted" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/un" "${KR[@]}" --metrics "$T/un.jsonl"
after_k() { field_by_step "$1" loss | awk -v k="$kstep" '$1 > k'; }
check "loss of every step after $kstep identical to the uninterrupted run ($(after_k "$T/un.jsonl" | wc -l) steps)" \
  eval '[ -n "$(after_k "$T/un.jsonl")" ] && [ "$(after_k "$T/kr.jsonl")" = "$(after_k "$T/un.jsonl")" ]'
check "final weights identical to the uninterrupted run" cmp -s "$T/kr/model.safetensors" "$T/un/model.safetensors"

# A run killed between the two renames of a checkpoint commit (only DIR.old-PID and DIR.tmp-PID exist):
# --resume puts the checkpoint back; without --resume the recovered checkpoint is not clobbered.
sh -c 'exit 0' & dead=$!; wait "$dead"
mv "$T/ck" "$T/ck.old-$dead" && cp -r "$T/ck.old-$dead" "$T/ck.tmp-$dead"
expect 2 "crashed commit: a new run still refuses the recovered checkpoint" -- \
  "$BIN" -i "$T/corpus.jsonl" -o "$T/ck" "${TINY[@]}" --max-steps 2
check "crashed commit: the checkpoint is recovered" eval 'complete_ckpt "$T/ck" && no_tmp_dirs "$T/ck"'
expect 0 "crashed commit: --resume continues it" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/ck" --resume --seq-len 32 \
  --batch-size 4 --max-steps 12 "${COMMON[@]}"

# ---------------------------------------------------------------------------------------------------------
# --stop-at-step N, then --resume to --max-steps: the same schedule as one run
if "$BIN" --help | grep -q -- '--stop-at-step'; then
  SS=(--seq-len 32 --batch-size 4 --max-steps 12 --warmup 2 "${COMMON[@]}")
  expect 0 "--stop-at-step 6 of 12" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/ss" --tokenizer "$T/tok" --preset tiny \
    "${SS[@]}" --stop-at-step 6 --metrics "$T/ss.jsonl"
  check "--stop-at-step: trainer_state.json step 6" test "$(json_int "$T/ss/trainer_state.json" step)" = 6
  check "--stop-at-step: 6 step records" test "$(step_records "$T/ss.jsonl")" = 6
  expect 0 "--resume after --stop-at-step" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/ss" --resume "${SS[@]}" \
    --metrics "$T/ss.jsonl"
  expect 0 "the same 12 steps in one run" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/s1" --tokenizer "$T/tok" \
    --preset tiny "${SS[@]}" --metrics "$T/s1.jsonl"
  check "--stop-at-step + --resume: the same lr schedule" \
    test "$(field_by_step "$T/ss.jsonl" lr)" = "$(field_by_step "$T/s1.jsonl" lr)"
  check "--stop-at-step + --resume: the same losses" \
    test "$(field_by_step "$T/ss.jsonl" loss)" = "$(field_by_step "$T/s1.jsonl" loss)"
else
  echo "SKIP: --stop-at-step is not an option of this ds-pretrain"
fi

# ---------------------------------------------------------------------------------------------------------
# --optim-state bf16: the moments saved in bf16 and a resumed run equal to the uninterrupted one
O8=(--seq-len 32 --batch-size 4 --max-steps 8 --warmup 2 "${COMMON[@]}")
OS=("${O8[@]}" --optim-state bf16)
expect 2 "--optim-state f16 (not a choice)" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/o0" "${TINY[@]}" \
  --optim-state f16
expect 0 "--optim-state bf16, --stop-at-step 4 of 8" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/os" --tokenizer "$T/tok" \
  --preset tiny "${OS[@]}" --stop-at-step 4 --metrics "$T/os.jsonl"
check "--optim-state bf16: optimizer.safetensors holds BF16 moments" \
  grep -aq '"dtype":"BF16"' <(head -c 4096 "$T/os/optimizer.safetensors")
expect 0 "--optim-state bf16: --resume" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/os" --resume "${OS[@]}" \
  --metrics "$T/os.jsonl"
expect 0 "--optim-state bf16: the same 8 steps in one run" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/o1" \
  --tokenizer "$T/tok" --preset tiny "${OS[@]}" --metrics "$T/o1.jsonl"
check "--optim-state bf16 + --resume: the same losses" \
  test "$(field_by_step "$T/os.jsonl" loss)" = "$(field_by_step "$T/o1.jsonl" loss)"
expect 0 "the same 8 steps with f32 moments" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/o3" --tokenizer "$T/tok" \
  --preset tiny "${O8[@]}" --metrics "$T/o3.jsonl"
check "--optim-state bf16: losses differ from f32 moments' (the state is really bf16)" \
  test "$(field_by_step "$T/o1.jsonl" loss)" != "$(field_by_step "$T/o3.jsonl" loss)"
expect 0 "--optim-state bf16 with --beta2 0.999 warns" -- "$BIN" -i "$T/corpus.jsonl" -o "$T/o2" "${TINY[@]}" \
  --max-steps 1 --optim-state bf16 --beta2 0.999
contains "$T/err" "resolution" "the warning says why"

echo "($SECONDS s)"
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "ds-pretrain CLI: all checks passed"
