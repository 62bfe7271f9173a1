#!/usr/bin/env bash
# Golden CLI test of ds-grpo: help/version and usage errors (exit 2), bad records (exit 3 with file:line, no
# checkpoint and no dump written), GRPO steps on a tiny ds-pretrain model from hand-made rewarded rollouts
# (complete checkpoint, in-place steps continue the optimizer, metrics, advantage dump), and the effect: the
# rewarded completions' log-probs (from ds-pretrain --dump-logits) go up, the others' go down.
# Usage: ds_grpo.sh PATH/TO/ds-grpo PATH/TO/ds-pretrain PATH/TO/ds-tokenize
# Run with OMP_WAIT_POLICY=passive on shared machines (spinning OpenMP threads starve each other).
set -u
BIN=${1:?usage: ds_grpo.sh PATH/TO/ds-grpo PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
PRE=${2:?usage: ds_grpo.sh PATH/TO/ds-grpo PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
TOK=${3:?usage: ds_grpo.sh PATH/TO/ds-grpo PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_grpo_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
SECONDS=0
. "$(dirname "$0")/lib.sh"

# bad_input DESCRIPTION LOCATION OUTDIR -- CMD...: exit 3, one "ds-grpo: error: ... (LOCATION)" line, no OUTDIR.
bad_input() {
  local what=$1 loc=$2 out=$3; shift 4
  expect 3 "$what" -- "$@"
  contains "$T/err" "$loc" "$what: message names $loc"
  contains "$T/err" "ds-grpo: error:" "$what: error prefix"
  check "$what: no checkpoint written" no_leftovers "$out"
  check "$what: no dump written" test ! -e "$T/bad_adv.jsonl"
}
# logp CKPT: sum of log p(completion) for the good and the bad pattern of both prompts, "GOOD BAD"
logp() {
  "$PRE" --dump-logits "$T/logits.jsonl" --ckpt "$1" -i "$T/ids.jsonl" --threads 1 --log-level warn || return 1
  awk -v P="4,4,3,3" -v G="1,0,1,0" '
    BEGIN { split(P, plen, ","); split(G, good, ",") }
    { ids = $0; sub(/.*"ids":\[/, "", ids); sub(/\].*/, "", ids); n = split(ids, id, ",")
      lg = $0; sub(/.*"logits":\[\[/, "", lg); sub(/\]\]\}$/, "", lg); split(lg, row, /\],\[/)
      s = 0
      for (t = plen[NR]; t < n; t++) {  # row t (1-based) predicts id[t + 1]
        V = split(row[t], v, ","); mx = v[1]
        for (k = 2; k <= V; k++) if (v[k] + 0 > mx + 0) mx = v[k]
        z = 0; for (k = 1; k <= V; k++) z += exp(v[k] - mx)
        s += v[id[t + 1] + 1] - mx - log(z)
      }
      if (good[NR] == 1) gs += s; else bs += s }
    END { printf "%.6f %.6f\n", gs, bs }' "$T/logits.jsonl"
}

# Setup: a tokenizer and a tiny base model pre-trained for a few steps on arithmetic text.
awk 'BEGIN { for (i = 0; i < 200; i++) { a = (i * 37) % 50; b = (i * 11 + 3) % 50
  printf("{\"text\":\"What is %d + %d? %d plus %d is %d. The answer is %d.\"}\n", a, b, a, b, a + b, a + b) } }' \
  >"$T/corpus.jsonl"
"$TOK" train -i "$T/corpus.jsonl" -o "$T/tok" --vocab-size 300 --threads 1 --log-level warn ||
  { echo "FAIL: ds-tokenize train (setup)"; exit 1; }
"$PRE" -i "$T/corpus.jsonl" -o "$T/base" --tokenizer "$T/tok" --preset tiny --seq-len 32 --batch-size 4 \
  --max-steps 3 --threads 1 --log-level warn || { echo "FAIL: ds-pretrain (setup)"; exit 1; }
# the windows prompt + completion of the fixture: good and bad pattern of both prompts
printf '%s\n' '{"ids":[0,40,41,42,100,101,102,1]}' '{"ids":[0,40,41,42,120,121,1]}' \
  '{"ids":[0,50,51,100,101,102,1]}' '{"ids":[0,50,51,120,121,1]}' >"$T/ids.jsonl"
RO="$FIX/grpo_rollouts.jsonl"
COMMON=(--threads 1 --log-level warn)
STEP=(--recompute-old-logprobs --lr 3e-3 --micro-batch 3 "${COMMON[@]}")

# ---------------------------------------------------------------------------------------------------------
# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
for opt in --ckpt --ref --beta --kl --loss-agg --eps-high --dual-clip --iterations --mini-batch \
  --recompute-old-logprobs --drop-zero-std --mask-truncated --overlong-max --adv-scale --dump-advantages --metrics; do
  contains "$T/out" "$opt" "--help lists $opt"
done
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-grpo " "--version names the program"
expect 2 "unknown option" -- "$BIN" --no-such-option
expect 2 "missing -i" -- "$BIN" --ckpt "$T/base" -o "$T/u1" "${COMMON[@]}"
contains "$T/err" "ds-grpo: error: -i/--input is required" "missing -i message"
expect 2 "missing --ckpt" -- "$BIN" -i "$RO" -o "$T/u1" "${COMMON[@]}"
expect 2 "missing -o" -- "$BIN" -i "$RO" --ckpt "$T/base" "${COMMON[@]}"
expect 2 "--beta without --ref" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u1" --beta 0.01 "${COMMON[@]}"
contains "$T/err" "--ref" "--beta without --ref names --ref"
expect 2 "unknown --loss-agg" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u1" --loss-agg mean "${COMMON[@]}"
expect 2 "Dr. GRPO without --norm-length" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u1" --loss-agg dr-grpo \
  "${COMMON[@]}"
expect 2 "--dual-clip <= 1" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u1" --dual-clip 0.5 "${STEP[@]}"
check "usage errors write nothing" no_leftovers "$T/u1"

# ---------------------------------------------------------------------------------------------------------
# Bad input (exit 3): file:line, no checkpoint, no dump
BAD=(--ckpt "$T/base" -o "$T/bad" --dump-advantages "$T/bad_adv.jsonl")
bad_input "token id outside the vocabulary" "grpo_bad_id.jsonl:2)" "$T/bad" -- \
  "$BIN" -i "$FIX/grpo_bad_id.jsonl" "${BAD[@]}" "${STEP[@]}"
bad_input "malformed JSON" "grpo_bad_json.jsonl:3)" "$T/bad" -- \
  "$BIN" -i "$FIX/grpo_bad_json.jsonl" "${BAD[@]}" "${STEP[@]}"
bad_input "no reward field" "grpo_no_reward.jsonl:1)" "$T/bad" -- \
  "$BIN" -i "$FIX/grpo_no_reward.jsonl" "${BAD[@]}" "${STEP[@]}"
contains "$T/err" "ds-reward" "no reward field: the message points at ds-reward"
bad_input "behaviour log-probs missing" "grpo_bad_id.jsonl:1)" "$T/bad" -- \
  "$BIN" -i "$FIX/grpo_bad_id.jsonl" "${BAD[@]}" "${COMMON[@]}"
bad_input "--ckpt not a checkpoint" "$T/tok" "$T/bad" -- \
  "$BIN" -i "$RO" --ckpt "$T/tok" -o "$T/bad" "${STEP[@]}"

# ---------------------------------------------------------------------------------------------------------
# Three GRPO steps: the first from the base model into a new directory, then in place
read -r good0 bad0 < <(logp "$T/base")
expect 0 "GRPO step 1" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/pol" --metrics "$T/metrics.jsonl" \
  --dump-advantages "$T/adv.jsonl" "${STEP[@]}"
check "step 1: a complete checkpoint" complete_ckpt "$T/pol"
check "step 1: grpo_step 1" test "$(json_int "$T/pol/trainer_state.json" grpo_step)" = 1
check "the tokenizer is the base model's" cmp -s "$T/base/tokenizer.model" "$T/pol/tokenizer.model"
for s in 2 3; do
  expect 0 "GRPO step $s (in place)" -- "$BIN" -i "$RO" --ckpt "$T/pol" -o "$T/pol" --metrics "$T/metrics.jsonl" \
    "${STEP[@]}"
done
check "in place: grpo_step 3" test "$(json_int "$T/pol/trainer_state.json" grpo_step)" = 3
check "in place: optimizer_step 3 (the optimizer continued)" \
  test "$(json_int "$T/pol/trainer_state.json" optimizer_step)" = 3
check "in place: no leftovers" eval '! compgen -G "$T/pol.tmp-*" >/dev/null && ! compgen -G "$T/pol.old-*" >/dev/null'
check "metrics: one record per step" test "$(grep -c '"step":' "$T/metrics.jsonl")" = 3
for key in reward_mean reward_std '"rewards/accuracy/mean"' accuracy frac_reward_zero_std clip_frac_low clip_frac_high \
  ratio_mean entropy completion_len_mean completion_len_max truncation_rate grad_norm tokens_per_s; do
  contains "$T/metrics.jsonl" "$key" "metrics carry $key"
done
contains "$T/metrics.jsonl" '"null_rewards":1' "metrics count the null reward"
contains "$T/metrics.jsonl" '"truncation_rate":0.25' "metrics: truncation rate 2 of 8"
read -r good bad < <(logp "$T/pol")
check "rewarded completions more likely: $good0 -> $good" awk -v a="$good0" -v b="$good" 'BEGIN { exit !(b > a + 0.3) }'
check "unrewarded completions less likely: $bad0 -> $bad" awk -v a="$bad0" -v b="$bad" 'BEGIN { exit !(b < a - 0.3) }'

# the advantage dump: every record, fields passed through, null for the null reward
check "dump: every input record" test "$(wc -l <"$T/adv.jsonl")" = "$(wc -l <"$RO")"
contains "$T/adv.jsonl" '"answer":"7"' "dump passes fields through"
contains "$T/adv.jsonl" '"advantage":null' "dump: null advantage for the null reward"
check "dump: positive advantage for reward 1" grep -q '"reward":1,.*"advantage":0\.86' "$T/adv.jsonl"
check "dump: negative advantage for reward 0" grep -q '"reward":0,.*"advantage":-0\.86' "$T/adv.jsonl"

# an existing other checkpoint is not replaced without --overwrite; with it, a KL run against a reference
before=$(tree_sum "$T/pol")
expect 2 "-o holds another checkpoint" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/pol" "${STEP[@]}"
check "refused: the checkpoint is unchanged" test "$(tree_sum "$T/pol")" = "$before"
expect 0 "KL to a reference, from stdin, --overwrite" -- "$BIN" -i - --ckpt "$T/base" --ref "$T/base" -o "$T/pol" \
  --overwrite --beta 0.05 --kl k2 --iterations 2 --mini-batch 4 --metrics "$T/kl.jsonl" "${STEP[@]}" <"$RO"
contains "$T/kl.jsonl" '"kl":' "metrics carry kl with a reference"
contains "$T/kl.jsonl" '"updates":4' "2 iterations x 2 mini-batches = 4 updates"
check "--overwrite started a fresh GRPO run" test "$(json_int "$T/pol/trainer_state.json" grpo_step)" = 1

# ---------------------------------------------------------------------------------------------------------
# Loop mode: rollout -> reward -> update in one process. The external scorer rewards a first completion token
# below 150; the reward must rise, and the engine must sample from the updated weights (its behaviour
# log-probs equal the trainer's at every step, which fails without Decoder::refresh after an update).
for i in 1 2 3 4 5 6; do echo "{\"id\":\"q$i\",\"prompt\":\"What is $i + $i?\",\"answer\":\"$((i + i))\"}"; done \
  >"$T/prompts.jsonl"
printf '%s\n' '#!/bin/sh' \
  'awk '\''{ t = $0; sub(/.*"completion_tokens":\[/, "", t); sub(/[],].*/, "", t); r = (t != "" && t + 0 < 150) ? 1 : 0' \
  '  sub(/}$/, ""); printf "%s,\"reward\":%d,\"rewards\":{\"low_first\":%d}}\n", $0, r, r }'\' >"$T/score.sh"
chmod +x "$T/score.sh"
LOOP=(--prompts "$T/prompts.jsonl" --prompts-per-step 4 -n 8 --max-new-tokens 1 --template raw --lr 3e-2
  "${COMMON[@]}")
expect 2 "--steps without --prompts" -- "$BIN" --ckpt "$T/base" -o "$T/u2" --steps 2 "${COMMON[@]}"
expect 2 "--steps with -i" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u2" --steps 2 "${LOOP[@]}"
expect 2 "--prompts without --steps" -- "$BIN" -i "$RO" --ckpt "$T/base" -o "$T/u2" --prompts "$T/prompts.jsonl" \
  "${COMMON[@]}"
check "loop usage errors write nothing" no_leftovers "$T/u2"
bad_input "loop: prompt longer than the context" "prompts.jsonl:1)" "$T/u2" -- \
  "$BIN" --ckpt "$T/base" -o "$T/u2" --steps 1 --prompts "$T/prompts.jsonl" --template r1-zero "${COMMON[@]}"
expect 1 "loop: a failing reward command" -- "$BIN" --ckpt "$T/base" -o "$T/u2" --steps 1 --reward-cmd false "${LOOP[@]}"
contains "$T/err" "reward command failed" "failing reward command message"
check "failing reward command: no checkpoint" no_leftovers "$T/u2"

expect 0 "loop: 8 steps" -- "$BIN" --ckpt "$T/base" -o "$T/loop" --steps 8 --reward-cmd "$T/score.sh" \
  --metrics "$T/loop.jsonl" --rollouts-out "$T/loop_ro.jsonl" "${LOOP[@]}"
check "loop: a complete checkpoint" complete_ckpt "$T/loop"
check "loop: grpo_step 8" test "$(json_int "$T/loop/trainer_state.json" grpo_step)" = 8
check "loop: data_position 32 prompts" test "$(json_int "$T/loop/trainer_state.json" data_position)" = 32
check "loop: one metrics record per step" test "$(grep -c '"step":' "$T/loop.jsonl")" = 8
check "loop: every step's rollouts kept (8 x 4 x 8)" test "$(wc -l <"$T/loop_ro.jsonl")" = 256
contains "$T/loop_ro.jsonl" '"answer":"2"' "loop rollouts pass prompt fields through"
contains "$T/loop_ro.jsonl" '"step":8,' "loop rollouts carry the step"
diffs=$(grep -o '"behaviour_logprob_abs_diff":[^,]*' "$T/loop.jsonl" | cut -d: -f2 | awk '$1 > 1e-4' | wc -l)
check "loop: engine and trainer log-probs agree at every step (decoder refreshed)" test "$diffs" = 0
rise=$(grep -o '"reward_mean":[^,]*' "$T/loop.jsonl" | cut -d: -f2 |
  awk '{ r[NR] = $1 } END { printf "%.3f -> %.3f", (r[1] + r[2]) / 2, (r[7] + r[8]) / 2
    if ((r[7] + r[8]) / 2 <= (r[1] + r[2]) / 2 + 0.15) printf " (too little)" }')
check "loop: the reward rises ($rise)" eval 'case "$rise" in *little*) false ;; *) true ;; esac'
expect 0 "loop: one more step in place, ds-reward scoring in process" -- \
  "$BIN" --ckpt "$T/loop" -o "$T/loop" --steps 1 --metrics "$T/loop.jsonl" "${LOOP[@]}"
check "loop continued: grpo_step 9" test "$(json_int "$T/loop/trainer_state.json" grpo_step)" = 9
contains "$T/loop.jsonl" '"prompt_position":36' "loop continued with the next prompts"
contains "$T/loop.jsonl" '"rewards/accuracy/mean"' "in-process scoring reports accuracy"

echo "ds_grpo.sh: $fails failure(s) in ${SECONDS}s"
[ "$fails" -eq 0 ]
