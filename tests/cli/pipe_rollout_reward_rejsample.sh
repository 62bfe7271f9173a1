#!/usr/bin/env bash
# Pipeline test: ds-tasks prompts | ds-rollout | ds-reward | ds-rejsample > sft.jsonl on a tiny checkpoint.
# Every stage's records carry their fields (rollout fields; reward adds "reward" and "rewards" and keeps every
# rollout field; rejsample writes {"messages": [user, assistant]} only for correct samples), the pipe, plain files
# and .zst files give the same bytes at every stage, and - since a barely trained model is rarely right - a
# hand-written rollout file with correct and wrong answers goes through ds-reward and ds-rejsample, and a
# hand-made rewarded file through ds-rejsample, keeping exactly the correct, well-formed samples.
# Usage: pipe_rollout_reward_rejsample.sh ds-rollout ds-reward ds-rejsample ds-pretrain ds-tokenize [ds-tasks]
# (paths; without ds-tasks a fixture supplies the prompts). Needs jq (exit 77 = skipped without it).
set -u
ROLL=${1:?usage: pipe_rollout_reward_rejsample.sh ds-rollout ds-reward ds-rejsample ds-pretrain ds-tokenize [ds-tasks]}
REW=${2:?missing ds-reward}
REJ=${3:?missing ds-rejsample}
PRE=${4:?missing ds-pretrain}
TOK=${5:?missing ds-tokenize}
TASKS=${6:-}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
command -v jq >/dev/null || { echo "SKIP: jq not found"; exit 77; }
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/pipe_rollout.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
SECONDS=0

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() {  # check DESCRIPTION CONDITION...: PASS when the command CONDITION succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# jqcheck DESCRIPTION FILE FILTER [JQ ARGS...]: the filter over the slurped records of FILE is true
jqcheck() {
  local what=$1 file=$2 filter=$3; shift 3
  if [ -f "$file" ] && jq -e -s "$@" "$filter" "$file" >/dev/null 2>"$T/jq.err"; then pass "$what"; else
    fail "$what"; sed 's/^/  jq: /' "$T/jq.err" | head -3; head -c 600 "$file" 2>/dev/null | sed 's/^/  /'; echo
  fi
}
nrec() { if [ -f "$1" ]; then grep -c . "$1"; else echo 0; fi; }
ROLLOUT_FIELDS='all(.[];
  (.id|type) == "string" and (.group|type) == "string" and (.sample|type) == "number" and
  (.prompt|type) == "string" and (.completion|type) == "string" and (.completion|startswith("<think>\n")) and
  (.completion_tokens|type) == "array" and (.completion_tokens|length) >= 1 and
  (.logprobs|type) == "array" and (.logprobs|length) == (.completion_tokens|length) and
  (.finish_reason == "stop" or .finish_reason == "length") and (.prompt_tokens|type) == "number" and
  .template == "r1-zero" and .prefill == "<think>\n" and (.seed|type) == "number" and
  (.answer|type) == "string" and (.task|type) == "string")'
# ds-reward's records: the input record field for field, plus reward (number|null) and rewards {name: number|null}
REWARD_FIELDS='length == ($in | length) and
  ([.[] | del(.reward, .rewards, .extracted_answer, .reward_skip_reason)] == $in) and
  all(.[]; has("reward") and ((.reward|type) == "number" or .reward == null) and (.rewards|type) == "object" and
           (.rewards|length) >= 1 and (.rewards|has("accuracy")) and
           (.rewards|to_entries|all(.value|type == "number" or . == null)))'
# ds-rejsample's records: messages = [user: the prompt, assistant: the completion] of a correct input record
SFT_FIELDS='all(.[]; (.messages|type) == "array" and (.messages|length) == 2 and
  .messages[0].role == "user" and .messages[1].role == "assistant" and
  (.messages|all((.content|type) == "string"))) and
  ($in | map({key: .id, value: .}) | from_entries) as $by | all(.[]; $by[.id] as $r |
    $r != null and $r.rewards.accuracy == 1 and .messages[0].content == $r.prompt and
    .messages[1].content == $r.completion)'

# Setup: tokenizer and a tiny model on ds-tasks' worked-solution corpus (or the fixture text), context raised to
# 1024 tokens (an r1-zero countdown prompt is ~500 tokens with a 300-piece vocabulary).
if [ -n "$TASKS" ]; then
  "$TASKS" --seed 3 corpus -n 300 --mixed-language-share 0 -o "$T/corpus.jsonl" --log-level warn || { echo "FAIL: ds-tasks corpus (setup)"; exit 1; }
  "$TASKS" --seed 3 prompts -n 4 -o "$T/prompts.jsonl" --log-level warn || { echo "FAIL: ds-tasks prompts (setup)"; exit 1; }
  echo "prompts from ds-tasks"
else
  jq -c '{text: (.prompt + " <think> " + .answer + " </think> <answer>" + .answer + "</answer>")}' \
    "$FIX/rollout_pipe_prompts.jsonl" >"$T/one.jsonl"
  for i in $(seq 1 40); do cat "$T/one.jsonl"; done >"$T/corpus.jsonl"
  cp "$FIX/rollout_pipe_prompts.jsonl" "$T/prompts.jsonl"
  echo "prompts from fixtures/rollout_pipe_prompts.jsonl (no ds-tasks)"
fi
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok" --vocab-size 512 --threads 1 --log-level warn ||
  { echo "FAIL: ds-tokenize train (setup)"; exit 1; }
"$PRE" -i "$T/corpus.jsonl" -o "$T/ck" --tokenizer "$T/tok" --preset tiny --seq-len 64 --batch-size 4 \
  --max-steps 20 --threads 1 --log-level warn || { echo "FAIL: ds-pretrain (setup)"; exit 1; }
sed -i 's/"max_position_embeddings": *256/"max_position_embeddings": 1024/' "$T/ck/config.json"
COMMON=(--threads 1 --log-level warn)
RO=("$ROLL" --ckpt "$T/ck" "${COMMON[@]}" -n 2 --prefill-think --max-new-tokens 24 --seed 5)
RW=("$REW" --log-level warn)
RJ=("$REJ" --log-level warn)
np=$(nrec "$T/prompts.jsonl")

# ---------------------------------------------------------------------------------------------------------
# The pipe
"${RO[@]}" <"$T/prompts.jsonl" | tee "$T/p.rollouts.jsonl" | "${RW[@]}" | tee "$T/p.rewarded.jsonl" |
  "${RJ[@]}" --report-json "$T/p.report.json" >"$T/p.sft.jsonl"
rcs="${PIPESTATUS[*]}"
check "ds-rollout | ds-reward | ds-rejsample: every stage exits 0 ($rcs)" test "$rcs" = "0 0 0 0 0"
check "rollouts: 2 samples for each of the $np prompts" test "$(nrec "$T/p.rollouts.jsonl")" = $((2 * np))
jqcheck "rollouts: every rollout field, answer and task passed through, <think> prefilled" \
  "$T/p.rollouts.jsonl" "$ROLLOUT_FIELDS"
jqcheck "rewarded: one record per rollout, every rollout field unchanged, plus reward and rewards" \
  "$T/p.rewarded.jsonl" "$REWARD_FIELDS" --slurpfile in "$T/p.rollouts.jsonl"
jqcheck "sft: {\"messages\": [user, assistant]} of correct samples only ($(nrec "$T/p.sft.jsonl") kept)" \
  "$T/p.sft.jsonl" "$SFT_FIELDS" --slurpfile in "$T/p.rewarded.jsonl"
jqcheck "ds-rejsample's report: read $((2 * np)), kept + dropped = read, kept = the sft records" "$T/p.report.json" \
  '.[0] | .read == $n and .kept + .dropped_total == .read and .kept == $kept and .bad_records == 0' \
  --argjson n $((2 * np)) --argjson kept "$(nrec "$T/p.sft.jsonl")"

# The same through files, then through .zst files: the same bytes at every stage
"${RO[@]}" -i "$T/prompts.jsonl" -o "$T/f.rollouts.jsonl" &&
  "${RW[@]}" -i "$T/f.rollouts.jsonl" -o "$T/f.rewarded.jsonl" &&
  "${RJ[@]}" -i "$T/f.rewarded.jsonl" -o "$T/f.sft.jsonl" 2>/dev/null
check "through files: every stage exits 0" test $? -eq 0
for s in rollouts rewarded sft; do
  check "through files: the same $s as the pipe" cmp -s "$T/f.$s.jsonl" "$T/p.$s.jsonl"
done
if command -v zstd >/dev/null; then
  zstd -q -c "$T/prompts.jsonl" >"$T/prompts.jsonl.zst"
  "${RO[@]}" -i "$T/prompts.jsonl.zst" -o "$T/z.rollouts.jsonl.zst" &&
    "${RW[@]}" -i "$T/z.rollouts.jsonl.zst" -o "$T/z.rewarded.jsonl.zst" &&
    "${RJ[@]}" -i "$T/z.rewarded.jsonl.zst" -o "$T/z.sft.jsonl.zst" 2>/dev/null
  check "through .zst files: every stage exits 0" test $? -eq 0
  for s in rollouts rewarded sft; do
    check "through .zst files: the same $s as the pipe" cmp -s <(zstd -dc "$T/z.$s.jsonl.zst") "$T/p.$s.jsonl"
  done
  zstd -dc "$T/prompts.jsonl.zst" | "${RO[@]}" -o "$T/m.rollouts.jsonl.zst" &&
    zstd -dc "$T/m.rollouts.jsonl.zst" | "${RW[@]}" -o "$T/m.rewarded.jsonl.zst" &&
    "${RJ[@]}" -i "$T/m.rewarded.jsonl.zst" 2>/dev/null | cat >"$T/m.sft.jsonl"
  check "mixed: stdin -> .zst -> stdin -> .zst -> stdout, every stage exits 0" test $? -eq 0
  check "mixed: the same rewarded records as the pipe" cmp -s <(zstd -dc "$T/m.rewarded.jsonl.zst") "$T/p.rewarded.jsonl"
  check "mixed: the same sft records as the pipe" cmp -s "$T/m.sft.jsonl" "$T/p.sft.jsonl"
else
  echo "SKIP: zstd not found (.zst checks)"
fi

# ---------------------------------------------------------------------------------------------------------
# Correct samples: hand-written rollouts (what a good model would write) through ds-reward and ds-rejsample.
# h1#0 correct; h1#1 wrong; h1#2 = h1#0 (duplicate); h2#0 correct; h2#1 correct but truncated ("length");
# h2#2 correct without <think>; h2#3 correct; h2#4 wrong.
HM=$FIX/rollout_handmade.jsonl
"${RW[@]}" -i "$HM" -o "$T/h.rewarded.jsonl"
check "hand-written rollouts: ds-reward exits 0" test $? -eq 0
jqcheck "hand-written rollouts: rewarded records keep every rollout field, add reward and rewards" \
  "$T/h.rewarded.jsonl" "$REWARD_FIELDS" --slurpfile in "$HM"
jqcheck "hand-written rollouts: accuracy 1 exactly for the correct answers" "$T/h.rewarded.jsonl" \
  '[.[] | select(.rewards.accuracy == 1) | .id] == ["h1#0", "h1#2", "h2#0", "h2#1", "h2#2", "h2#3"]'
"${RJ[@]}" -i "$T/h.rewarded.jsonl" -o "$T/h.sft.jsonl" --report-json "$T/h.report.json"
check "hand-written rollouts: ds-rejsample exits 0" test $? -eq 0
jqcheck "hand-written rollouts: kept the correct, complete, well-formed, distinct samples h1#0 h2#0 h2#3" \
  "$T/h.sft.jsonl" 'map(.id) == ["h1#0", "h2#0", "h2#3"]'
jqcheck "hand-written rollouts: {\"messages\"} of the kept samples" "$T/h.sft.jsonl" "$SFT_FIELDS" \
  --slurpfile in "$T/h.rewarded.jsonl"
cat "$HM" | "${RW[@]}" | "${RJ[@]}" >"$T/h2.sft.jsonl" 2>/dev/null
check "hand-written rollouts: the pipe gives the same sft records" cmp -s "$T/h2.sft.jsonl" "$T/h.sft.jsonl"

# A hand-made rewarded file straight into ds-rejsample: k1#0 and k1#2 correct, k1#1 wrong, k2#0 unscored
"${RJ[@]}" -i "$FIX/rollout_rewarded.jsonl" -o "$T/k.sft.jsonl"
check "hand-made rewarded file: ds-rejsample exits 0" test $? -eq 0
jqcheck "hand-made rewarded file: kept k1#0 and k1#2, as {\"messages\"}" "$T/k.sft.jsonl" \
  'map(.id) == ["k1#0", "k1#2"]'
jqcheck "hand-made rewarded file: messages are the prompt and the completion" "$T/k.sft.jsonl" "$SFT_FIELDS" \
  --slurpfile in "$FIX/rollout_rewarded.jsonl"

echo "($SECONDS s)"
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "rollout | reward | rejsample pipeline: all checks passed"
