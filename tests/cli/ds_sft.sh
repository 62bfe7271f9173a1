#!/usr/bin/env bash
# Golden CLI test of ds-sft: help/version and usage errors (exit 2), bad records (exit 3, one "file:line" message,
# no checkpoint directory left), a tiny fine-tuning run from a ds-pretrain checkpoint (checkpoint files, metrics,
# the base tokenizer), --epochs, --no-packing / --strict, --prefill-think, refusing to clobber a checkpoint,
# --resume and --overwrite.
# Usage: ds_sft.sh PATH/TO/ds-sft PATH/TO/ds-pretrain PATH/TO/ds-tokenize
# Run with OMP_WAIT_POLICY=passive on shared machines (spinning OpenMP threads starve each other).
set -u
BIN=${1:?usage: ds_sft.sh PATH/TO/ds-sft PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
PRE=${2:?usage: ds_sft.sh PATH/TO/ds-sft PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
TOK=${3:?usage: ds_sft.sh PATH/TO/ds-sft PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_sft_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
SECONDS=0
. "$(dirname "$0")/lib.sh"


# Setup: a tokenizer and a base model pre-trained for a few steps on arithmetic text; 60 arithmetic chats.
awk 'BEGIN { for (i = 0; i < 200; i++) { a = (i * 37) % 50; b = (i * 11 + 3) % 50
  printf("{\"text\":\"What is %d + %d? %d plus %d is %d. The answer is %d.\"}\n", a, b, a, b, a + b, a + b) } }' \
  >"$T/corpus.jsonl"
awk 'BEGIN { for (i = 0; i < 60; i++) { a = (i * 37) % 50; b = (i * 11 + 3) % 50
  printf("{\"messages\":[{\"role\":\"user\",\"content\":\"What is %d + %d?\"},", a, b)
  printf("{\"role\":\"assistant\",\"content\":\"<think>\\n%d plus %d is %d</think>\\n\\nThe answer is %d.\"}]}\n",
         a, b, a + b, a + b) } }' >"$T/chat.jsonl"
COMMON=(--threads 1 --log-level warn)
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok" --vocab-size 300 --threads 1 --log-level warn ||
  { echo "FAIL: ds-tokenize train (setup)"; exit 1; }
"$PRE" -i "$T/corpus.jsonl" -o "$T/base" --tokenizer "$T/tok" --preset tiny --seq-len 32 --batch-size 4 \
  --max-steps 3 "${COMMON[@]}" || { echo "FAIL: ds-pretrain (setup)"; exit 1; }
BASE=(--init-from "$T/base" --batch-size 4 --lr 3e-3 --threads 1)  # CLI11 takes each option once
TINY=("${BASE[@]}" --seq-len 64 --log-level warn)

# ---------------------------------------------------------------------------------------------------------
# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
for opt in --init-from --epochs --no-packing --prefill-think --mtp-lambda --resume --overwrite --max-steps; do
  contains "$T/out" "$opt" "--help lists $opt"
done
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-sft " "--version names the program"
expect 2 "unknown option" -- "$BIN" --no-such-option -i "$T/chat.jsonl" -o "$T/u1"
contains "$T/err" "ds-sft: error:" "usage error message"
expect 2 "missing -i" -- "$BIN" -o "$T/u2" "${TINY[@]}"
contains "$T/err" "ds-sft: error: -i/--input is required" "missing -i message"
expect 2 "missing -o" -- "$BIN" -i "$T/chat.jsonl" "${TINY[@]}"
expect 2 "missing --init-from" -- "$BIN" -i "$T/chat.jsonl" -o "$T/u3" --seq-len 64 "${COMMON[@]}"
contains "$T/err" "--init-from" "missing --init-from message"
expect 2 "--resume without a checkpoint" -- "$BIN" -i "$T/chat.jsonl" -o "$T/u4" --resume "${COMMON[@]}"
expect 2 "--strict without --no-packing" -- "$BIN" -i "$T/chat.jsonl" -o "$T/u5" "${TINY[@]}" --strict
expect 2 "--seq-len beyond max_position_embeddings" -- "$BIN" -i "$T/chat.jsonl" -o "$T/u6" "${TINY[@]}" \
  --seq-len 100000
check "usage errors leave no output directory" eval \
  'for d in u1 u2 u3 u4 u5 u6; do no_leftovers "$T/$d" || exit 1; done'

# ---------------------------------------------------------------------------------------------------------
# Bad input: exit 3, a single "ds-sft: error: ... (file[:line])" line, no checkpoint directory
bad_input() {  # bad_input DESCRIPTION OUTPUT WHERE -- CMD...
  local what=$1 out=$2 where=$3; shift 3
  expect 3 "$what" "$@"
  check "$what: one error line naming $where" eval \
    '[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^ds-sft: error: .*$where" "$T/err"'
  check "$what: no checkpoint written" no_leftovers "$out"
}
bad_input "a message with role tool" "$T/b1" "'tool'.*sft_bad_role.jsonl:3)" -- \
  "$BIN" -i "$FIX/sft_bad_role.jsonl" -o "$T/b1" "${TINY[@]}" --max-steps 2
bad_input "a conversation without an assistant message" "$T/b2" "assistant.*sft_no_assistant.jsonl:2)" -- \
  "$BIN" -i "$FIX/sft_no_assistant.jsonl" -o "$T/b2" "${TINY[@]}" --max-steps 2
bad_input "non-string content" "$T/b3" "content.*sft_bad_content.jsonl:2)" -- \
  "$BIN" -i "$FIX/sft_bad_content.jsonl" -o "$T/b3" "${TINY[@]}" --max-steps 2
bad_input "a record without messages or prompt/completion" "$T/b4" "sft_no_messages.jsonl:3)" -- \
  "$BIN" -i "$FIX/sft_no_messages.jsonl" -o "$T/b4" "${TINY[@]}" --max-steps 2
printf '%s\n' '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}' \
  '{"messages":[{"role":"user","content":"hi"}' >"$T/torn.jsonl"
bad_input "a malformed JSONL line" "$T/b5" "torn.jsonl:2)" -- \
  "$BIN" -i "$T/torn.jsonl" -o "$T/b5" "${TINY[@]}" --max-steps 2
: >"$T/empty.jsonl"
bad_input "an empty file" "$T/b6" "empty.jsonl)" -- "$BIN" -i "$T/empty.jsonl" -o "$T/b6" "${TINY[@]}" --max-steps 2
bad_input "--init-from a directory without a checkpoint" "$T/b7" "not a checkpoint" -- \
  "$BIN" -i "$T/chat.jsonl" -o "$T/b7" --init-from "$T/tok" --seq-len 64 "${COMMON[@]}" --max-steps 2
bad_input "--no-packing --strict with a conversation longer than the window" "$T/b8" "chat.jsonl:1)" -- \
  "$BIN" -i "$T/chat.jsonl" -o "$T/b8" "${BASE[@]}" --log-level warn --no-packing --strict --seq-len 16 --max-steps 2

# ---------------------------------------------------------------------------------------------------------
# A tiny fine-tuning run: checkpoint files, metrics, the base model's tokenizer
expect 0 "tiny fine-tuning run" -- "$BIN" -i "$T/chat.jsonl" -o "$T/ck" "${TINY[@]}" --max-steps 12 --warmup 2 \
  --eval-fraction 0.2 --eval-every 6 --metrics "$T/m.jsonl" --expert-stats "$T/e.jsonl"
check "checkpoint directory complete" complete_ckpt "$T/ck"
check "trainer_state.json step 12" test "$(json_int "$T/ck/trainer_state.json" step)" = 12
check "the checkpoint carries the base tokenizer" cmp -s "$T/ck/tokenizer.model" "$T/base/tokenizer.model"
check "metrics: one record per step 1..12" \
  test "$(field_by_step "$T/m.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 12) "
for k in loss main_loss mtp_loss lr grad_norm tokens; do
  check "metrics: every step record has \"$k\"" test "$(field_by_step "$T/m.jsonl" "$k" | grep -c '[0-9]')" = 12
done
check "metrics: held-out records at steps 0, 6 and 12" \
  test "$(sed -n 's/^{"step":\([0-9]*\),"eval_loss":[0-9].*/\1/p' "$T/m.jsonl" | tr '\n' ' ')" = "0 6 12 "
loss_fell=$(field_by_step "$T/m.jsonl" main_loss | awk 'NR <= 3 { a += $2 } NR >= 10 { b += $2 } END { print (b < a) }')
check "the assistant-token loss falls (steps 10-12 below 1-3)" test "$loss_fell" = 1
check "expert stats written" test -s "$T/e.jsonl"

# --epochs sets the number of steps: ceil(epochs * windows / batch)
expect 0 "--epochs 2 without --max-steps" -- "$BIN" -i "$T/chat.jsonl" -o "$T/ep" "${BASE[@]}" --seq-len 64 \
  --epochs 2 --eval-fraction 0 --log-level info
windows=$(sed -n 's/.* in \([0-9]*\) training .*/\1/p' "$T/err")
check "--epochs 2: step = ceil(2 * $windows / 4)" \
  test -n "$windows" -a "$(json_int "$T/ep/trainer_state.json" step)" = $(((2 * ${windows:-0} + 3) / 4))

# Mixed record forms, --no-packing (truncation is a warning), --prefill-think
expect 0 "--no-packing with messages, prompt/completion and multi-turn records" -- \
  "$BIN" -i "$FIX/sft_chat.jsonl" -o "$T/np" "${BASE[@]}" --no-packing --seq-len 32 --max-steps 3 --eval-fraction 0 \
  --log-level info
contains "$T/err" "6 conversations" "--no-packing: all six records read"
contains "$T/err" "truncated" "--no-packing: a truncation warning"
check "--no-packing: checkpoint complete" complete_ckpt "$T/np"
expect 0 "--prefill-think" -- "$BIN" -i "$T/chat.jsonl" -o "$T/pt" "${TINY[@]}" --prefill-think --max-steps 2
check "--prefill-think: checkpoint complete" complete_ckpt "$T/pt"

# ---------------------------------------------------------------------------------------------------------
# An existing checkpoint is never replaced without --resume or --overwrite
before=$(tree_sum "$T/ck"; stat -c %i "$T/ck")
expect 2 "existing checkpoint without --resume/--overwrite" -- "$BIN" -i "$T/chat.jsonl" -o "$T/ck" "${TINY[@]}" \
  --max-steps 2
contains "$T/err" "--overwrite" "the refusal names --resume/--overwrite"
check "the existing checkpoint is untouched" test "$before" = "$(tree_sum "$T/ck"; stat -c %i "$T/ck")"
expect 0 "--resume to 16 steps" -- "$BIN" -i "$T/chat.jsonl" -o "$T/ck" --resume --seq-len 64 --batch-size 4 \
  --lr 3e-3 --max-steps 16 --warmup 2 --eval-fraction 0.2 --eval-every 6 --metrics "$T/m.jsonl" "${COMMON[@]}"
check "resumed: trainer_state.json step 16" test "$(json_int "$T/ck/trainer_state.json" step)" = 16
check "resumed metrics: exactly one record per step 1..16" \
  test "$(field_by_step "$T/m.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 16) "
expect 0 "--overwrite replaces it" -- "$BIN" -i "$T/chat.jsonl" -o "$T/ck" "${TINY[@]}" --max-steps 2 --overwrite
check "--overwrite: trainer_state.json step 2" test "$(json_int "$T/ck/trainer_state.json" step)" = 2

echo "($SECONDS s)"
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "ds-sft CLI: all checks passed"
