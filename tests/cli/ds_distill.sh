#!/usr/bin/env bash
# Golden CLI test of ds-distill: usage errors (exit 2), bad inputs (exit 3: a student with another tokenizer, a
# missing prompts file, a bad prompt record, no trace kept; one clear message, no student checkpoint), a hand-made
# traces file filtered exactly as ds-reward | ds-rejsample do, and an end-to-end run: a teacher fine-tuned on a
# tiny deterministic task samples traces, a smaller dense student (fresh from a config.json, or a checkpoint) is
# fine-tuned on the kept ones, and a second run reuses the traces (the finished stage is skipped); --resume.
# Usage: ds_distill.sh ds-distill ds-pretrain ds-tokenize ds-sft ds-reward ds-rejsample
# Run with OMP_WAIT_POLICY=passive on shared machines (spinning OpenMP threads starve each other).
set -u
USAGE="usage: ds_distill.sh ds-distill ds-pretrain ds-tokenize ds-sft ds-reward ds-rejsample"
BIN=${1:?$USAGE}; PRE=${2:?$USAGE}; TOK=${3:?$USAGE}; SFT=${4:?$USAGE}; REW=${5:?$USAGE}; REJ=${6:?$USAGE}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_distill_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
SECONDS=0
. "$(dirname "$0")/lib.sh"

# Setup: a tokenizer, a base model pre-trained a few steps, and a teacher fine-tuned until it answers
# "What is a + 1?" (a = 0, 1, 2) exactly; a second tokenizer with another vocabulary and a student on it.
awk 'BEGIN { for (i = 0; i < 200; i++) { a = (i * 37) % 10; b = (i * 11 + 3) % 10
  printf("{\"text\":\"What is %d + %d? %d plus %d is %d. The answer is %d.\"}\n", a, b, a, b, a + b, a + b) } }' \
  >"$T/corpus.jsonl"
awk 'BEGIN { for (i = 0; i < 40; i++) { a = i % 3
  printf("{\"messages\":[{\"role\":\"user\",\"content\":\"What is %d + 1?\"},", a)
  printf("{\"role\":\"assistant\",\"content\":\"<think>\\n%d plus 1 is %d</think>\\n<answer>%d</answer>\"}]}\n",
         a, a + 1, a + 1) } }' >"$T/chat.jsonl"
# q2's gold answer is wrong on purpose: the teacher's (right) answer is dropped as incorrect.
printf '%s\n' '{"id":"q0","prompt":"What is 0 + 1?","answer":"1"}' '{"id":"q1","prompt":"What is 1 + 1?","answer":"2"}' \
  '{"id":"q2","prompt":"What is 2 + 1?","answer":"4"}' >"$T/prompts.jsonl"
COMMON=(--threads 1 --log-level warn)
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok" --vocab-size 300 "${COMMON[@]}" || { echo "FAIL: setup tokenizer"; exit 1; }
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok2" --vocab-size 320 "${COMMON[@]}" || { echo "FAIL: setup tok2"; exit 1; }
"$PRE" -i "$T/corpus.jsonl" -o "$T/base" --tokenizer "$T/tok" --preset tiny --seq-len 32 --batch-size 4 \
  --max-steps 3 "${COMMON[@]}" || { echo "FAIL: ds-pretrain (setup)"; exit 1; }
"$PRE" -i "$T/corpus.jsonl" -o "$T/other" --tokenizer "$T/tok2" --preset tiny --seq-len 32 --batch-size 4 \
  --max-steps 1 "${COMMON[@]}" || { echo "FAIL: ds-pretrain other (setup)"; exit 1; }
"$SFT" -i "$T/chat.jsonl" -o "$T/teacher" --init-from "$T/base" --batch-size 4 --lr 1e-2 --seq-len 64 \
  --max-steps 200 --eval-fraction 0 "${COMMON[@]}" || { echo "FAIL: ds-sft teacher (setup)"; exit 1; }
STUDENT_CFG="$FIX/distill_student.json"  # dense (first_k_dense_replace = num_hidden_layers = 1), no MTP
GEN=(--temperature 0 -n 3 --max-new-tokens 24)
FT=(--seq-len 64 --batch-size 2 --eval-fraction 0 --threads 1)
RUN0=("${GEN[@]}" "${FT[@]}")
RUN=(--teacher "$T/teacher" --prompts "$T/prompts.jsonl" "${RUN0[@]}")

# ---------------------------------------------------------------------------------------------------------
# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
for opt in --teacher --student --student-config --student-preset --prompts --traces --samples-per-prompt \
  --temperature --min-reward --language --max-per-prompt --epochs --max-steps --resume --overwrite; do
  contains "$T/out" "$opt" "--help lists $opt"
done
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-distill " "--version names the program"
expect 2 "missing --teacher" -- "$BIN" --prompts "$T/prompts.jsonl" -o "$T/u1" --student-config "$STUDENT_CFG"
contains "$T/err" "ds-distill: error: --teacher CKPT is required" "missing --teacher message"
expect 2 "missing -o" -- "$BIN" "${RUN[@]}" --student-config "$STUDENT_CFG"
expect 2 "no student" -- "$BIN" "${RUN[@]}" -o "$T/u2"
contains "$T/err" "--student-config" "no student: the message names the ways to give one"
expect 2 "two students" -- "$BIN" "${RUN[@]}" -o "$T/u3" --student "$T/base" --student-preset tiny
expect 2 "unknown preset" -- "$BIN" "${RUN[@]}" -o "$T/u4" --student-preset huge
expect 2 "--resume without a checkpoint" -- "$BIN" "${RUN[@]}" -o "$T/u5" --resume
expect 2 "missing --prompts" -- "$BIN" --teacher "$T/teacher" -o "$T/u6" --student-config "$STUDENT_CFG"
contains "$T/err" "--prompts FILE is required" "missing --prompts message"
check "usage errors leave no output" eval \
  'for d in u1 u2 u3 u4 u5 u6; do no_leftovers "$T/$d" && ! compgen -G "$T/$d.*" >/dev/null || exit 1; done'

# ---------------------------------------------------------------------------------------------------------
# Bad input: exit 3, one "ds-distill: error:" line, no student checkpoint
bad_input() {  # bad_input DESCRIPTION OUTPUT PATTERN -- CMD...
  local what=$1 out=$2 where=$3; shift 3
  expect 3 "$what" "$@" --log-level warn
  check "$what: one error line matching '$where'" eval \
    '[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "^ds-distill: error: .*$where" "$T/err"'
  check "$what: no student checkpoint" no_leftovers "$out"
}
bad_input "a student with another tokenizer" "$T/b1" "student's tokenizer .*teacher's tokenizer.*other)" -- \
  "$BIN" "${RUN[@]}" -o "$T/b1" --student "$T/other" --max-steps 2
check "tokenizer mismatch: checked before the teacher runs (no traces)" test ! -e "$T/b1.traces.jsonl"
bad_input "a missing prompts file" "$T/b2" "no such file.*nope.jsonl" -- \
  "$BIN" --teacher "$T/teacher" "${RUN0[@]}" --prompts "$T/nope.jsonl" -o "$T/b2" --student-config "$STUDENT_CFG" --max-steps 2
bad_input "a prompt record without a prompt" "$T/b3" "prompt.*distill_bad_prompt.jsonl:2)" -- \
  "$BIN" --teacher "$T/teacher" "${RUN0[@]}" --prompts "$FIX/distill_bad_prompt.jsonl" -o "$T/b3" --student-config "$STUDENT_CFG" --max-steps 2
check "a bad prompt record leaves no traces file (generation is all or nothing)" \
  eval '! compgen -G "$T/b3.traces.jsonl*" >/dev/null'
bad_input "a --teacher that is not a checkpoint" "$T/b4" "not a checkpoint" -- \
  "$BIN" --prompts "$T/prompts.jsonl" "${RUN0[@]}" --teacher "$T/tok" -o "$T/b4" --student-config "$STUDENT_CFG"
cp "$FIX/distill_traces.jsonl" "$T/b5traces.jsonl"
bad_input "no trace kept" "$T/b5" "no trace was kept (read 8, kept 0" -- \
  "$BIN" "${RUN[@]}" --traces "$T/b5traces.jsonl" --min-reward 5 -o "$T/b5" --student-config "$STUDENT_CFG"

# ---------------------------------------------------------------------------------------------------------
# A hand-made traces file (reused, the teacher does not run): the same kept records and counts as
# ds-reward | ds-rejsample with the same options.
cp "$FIX/distill_traces.jsonl" "$T/hand.jsonl"
expect 0 "hand-made traces -> student" -- "$BIN" "${RUN[@]}" --traces "$T/hand.jsonl" --max-per-prompt 1 -o "$T/hs" \
  --student-config "$STUDENT_CFG" --max-steps 3 --log-level info
contains "$T/err" "reusing" "hand-made traces: reused, not regenerated"
"$REW" -i "$FIX/distill_traces.jsonl" --log-level warn | "$REJ" --max-per-prompt 1 --report-json "$T/ref.json" \
  -o "$T/ref.jsonl" --log-level warn
check "kept records = ds-reward | ds-rejsample" cmp -s "$T/hand.kept.jsonl" "$T/ref.jsonl"
check "report = ds-rejsample's" cmp -s "$T/hand.report.json" "$T/ref.json"
check "kept 2 of 8 (unscored, incorrect, truncated, think_tags, duplicate, over_cap: 1 each)" eval \
  '[ "$(json_int "$T/hand.report.json" kept)" = 2 ] && [ "$(json_int "$T/hand.report.json" read)" = 8 ] &&
   for r in unscored incorrect truncated think_tags duplicate over_cap; do
     [ "$(json_int "$T/hand.report.json" $r)" = 1 ] || exit 1; done'
check "scored traces carry reward fields" test "$(grep -c '"reward":' "$T/hand.scored.jsonl")" = 8
check "hand-made traces: student checkpoint complete" complete_ckpt "$T/hs"

# ---------------------------------------------------------------------------------------------------------
# End to end: the teacher samples 3 x 3 traces (greedy), a fresh dense student learns the kept ones
expect 0 "teacher -> traces -> fresh dense student" -- "$BIN" "${RUN[@]}" -o "$T/st" --student-config "$STUDENT_CFG" \
  --traces "$T/tr.jsonl" --max-steps 6 --lr 3e-3 --metrics "$T/m.jsonl" --log-level info
check "traces: 9 records" test "$(wc -l <"$T/tr.jsonl")" = 9
for k in id group sample prompt completion completion_tokens logprobs finish_reason prompt_ids template answer; do
  check "traces: every record has \"$k\"" test "$(grep -c "\"$k\":" "$T/tr.jsonl")" = 9
done
check "traces: the teacher answers q0 and q1 correctly" eval \
  'grep -q "\"id\":\"q0#0\".*<answer>1</answer>" "$T/tr.jsonl" && grep -q "\"id\":\"q1#0\".*<answer>2</answer>" "$T/tr.jsonl"'
check "kept 2 of 9: incorrect 3 (q2), duplicate 4" eval \
  '[ "$(json_int "$T/tr.report.json" kept)" = 2 ] && [ "$(json_int "$T/tr.report.json" incorrect)" = 3 ] &&
   [ "$(json_int "$T/tr.report.json" duplicate)" = 4 ]'
"$REW" -i "$T/tr.jsonl" --log-level warn | "$REJ" -o "$T/ref2.jsonl" --log-level warn
check "generated traces: kept records = ds-reward | ds-rejsample" cmp -s "$T/tr.kept.jsonl" "$T/ref2.jsonl"
check "student checkpoint complete" complete_ckpt "$T/st"
check "student: the config's dense single layer, no MTP" eval \
  'grep -q "\"num_hidden_layers\": 1," "$T/st/config.json" && grep -q "\"first_k_dense_replace\": 1," "$T/st/config.json" &&
   grep -q "\"num_nextn_predict_layers\": 0," "$T/st/config.json"'
check "student: the teacher's tokenizer" cmp -s "$T/st/tokenizer.model" "$T/teacher/tokenizer.model"
check "student: trainer_state.json step 6" test "$(json_int "$T/st/trainer_state.json" step)" = 6
check "metrics: one record per step 1..6" \
  test "$(field_by_step "$T/m.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 6) "
check "no fresh-student scratch directory left" eval '! compgen -G "$T/st.student-init*" >/dev/null'

# The traces exist: a second run with another student skips generation (same traces, same kept records)
before=$(md5sum <"$T/tr.jsonl")
expect 0 "traces reused; student from a checkpoint (--student)" -- "$BIN" "${RUN[@]}" -o "$T/st2" --student "$T/base" \
  --traces "$T/tr.jsonl" --max-steps 2 --log-level info
contains "$T/err" "reusing" "second run: the traces are reused"
check "second run: traces file unchanged" test "$before" = "$(md5sum <"$T/tr.jsonl")"
check "--student: checkpoint with the student's config (2 layers, MoE)" \
  eval 'complete_ckpt "$T/st2" && grep -q "\"num_hidden_layers\": 2," "$T/st2/config.json"'

# {"messages"} prompts: the traces carry the conversation as "prompt", the kept records start with it
printf '%s\n' '{"id":"m0","messages":[{"role":"user","content":"What is 1 + 1?"}],"answer":"2"}' >"$T/mprompts.jsonl"
expect 0 "{\"messages\"} prompts" -- "$BIN" --teacher "$T/teacher" --prompts "$T/mprompts.jsonl" "${RUN0[@]}" \
  -o "$T/sm" --student "$T/base" --max-steps 1 --log-level warn
check "messages prompts: traces carry \"prompt\":[messages]" \
  test "$(grep -c '"prompt":\[{"role":"user","content":"What is 1 + 1?"}\]' "$T/sm.traces.jsonl")" = 3
check "messages prompts: one kept chat record, user then assistant" eval \
  '[ "$(wc -l <"$T/sm.traces.kept.jsonl")" = 1 ] &&
   grep -q "^{\"messages\":\[{\"role\":\"user\",\"content\":\"What is 1 + 1?\"},{\"role\":\"assistant\",\"content\":\"<think>" \
     "$T/sm.traces.kept.jsonl"'
check "no .part file left after generation" eval '! compgen -G "$T/*.part" >/dev/null'

# Logit distillation (--kd-weight): the SFT loss plus KL(teacher || student) on the trace tokens; kd_loss falls
expect 0 "--kd-weight: logit distillation" -- "$BIN" "${RUN[@]}" -o "$T/kd" --student "$T/base" --traces "$T/tr.jsonl" \
  --max-steps 8 --lr 3e-3 --kd-weight 1 --metrics "$T/kd.jsonl" --log-level warn
check "kd: complete checkpoint" complete_ckpt "$T/kd"
check "kd: kd_loss in every step record" test "$(grep -c '"kd_loss":' "$T/kd.jsonl")" = 8
check "kd: kd_loss falls from step 1 to step 8" eval \
  '[ "$(grep -o "\"kd_loss\":[-0-9.e]*" "$T/kd.jsonl" | cut -d: -f2 | awk "NR == 1 { a = \$1 } END { print (\$1 < a) }")" = 1 ]'
check "no kd_loss without --kd-weight" eval '! grep -q kd_loss "$T/m.jsonl"'
expect 2 "--kd-weight < 0" -- "$BIN" "${RUN[@]}" -o "$T/kd2" --student "$T/base" --traces "$T/tr.jsonl" --kd-weight -1

# An existing checkpoint: refused without --resume/--overwrite; --resume continues the fine-tuning
expect 2 "existing checkpoint without --resume/--overwrite" -- "$BIN" "${RUN[@]}" -o "$T/st" \
  --student-config "$STUDENT_CFG" --traces "$T/tr.jsonl" --max-steps 2
expect 0 "--resume to 9 steps" -- "$BIN" "${RUN[@]}" -o "$T/st" --resume --traces "$T/tr.jsonl" --max-steps 9 \
  --lr 3e-3 --metrics "$T/m.jsonl" --log-level warn
check "resumed: trainer_state.json step 9" test "$(json_int "$T/st/trainer_state.json" step)" = 9
check "resumed metrics: one record per step 1..9" \
  test "$(field_by_step "$T/m.jsonl" loss | cut -d' ' -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 9) "

echo "($SECONDS s)"
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "ds-distill CLI: all checks passed"
