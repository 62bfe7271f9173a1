#!/usr/bin/env bash
# Golden CLI test of ds-rollout: help/version and usage errors (exit 2); G samples per prompt with every field of
# the rollout record and the prompt record's other fields passed through byte for byte; seeded reproducibility and
# independence of the batch composition; greedy groups; --max-new-tokens, --stop, --ignore-eos, --precision (usage),
# --prefill-think, the r1-zero / chat / raw templates, --top-k 1 and a tiny --top-p equal to greedy; MTP speculation
# equal to plain decoding when greedy; stdin/stdout and .zst; bad records (exit 3 naming file:line, the good samples
# before them kept, --skip-bad); prompts beyond the context; an unwritable output.
# Usage: ds_rollout.sh PATH/TO/ds-rollout PATH/TO/ds-pretrain PATH/TO/ds-tokenize
# Needs jq (exit 77 = skipped without it). Run with OMP_WAIT_POLICY=passive on shared machines.
set -u
BIN=${1:?usage: ds_rollout.sh PATH/TO/ds-rollout PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
PRE=${2:?usage: ds_rollout.sh PATH/TO/ds-rollout PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
TOK=${3:?usage: ds_rollout.sh PATH/TO/ds-rollout PATH/TO/ds-pretrain PATH/TO/ds-tokenize}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
command -v jq >/dev/null || { echo "SKIP: jq not found"; exit 77; }
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_rollout_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0
SECONDS=0
. "$(dirname "$0")/lib.sh"

# jqcheck DESCRIPTION FILE FILTER [JQ ARGS...]: the filter over the slurped records of FILE is true
jqcheck() {
  local what=$1 file=$2 filter=$3; shift 3
  if [ -s "$file" ] && jq -e -s "$@" "$filter" "$file" >/dev/null 2>"$T/jq.err"; then pass "$what"; else
    fail "$what"; sed 's/^/  jq: /' "$T/jq.err" | head -3; head -c 600 "$file" | sed 's/^/  /'; echo
  fi
}
nrec() { if [ -f "$1" ]; then grep -c . "$1"; else echo 0; fi; }
# The generated part of every record, one line per sample in id order (what seeds and engines must reproduce).
gen() { jq -c '[.id, .completion, .completion_tokens, .finish_reason]' "$1" | LC_ALL=C sort; }

# Setup: a tokenizer and a tiny checkpoint trained for 20 steps; a copy with a 1024-token context (the r1-zero
# template alone is ~370 tokens with a 300-piece vocabulary; the tiny preset's context is 256).
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
"$PRE" -i "$T/corpus.jsonl" -o "$T/ck256" --tokenizer "$T/tok" --preset tiny --seq-len 32 --batch-size 4 \
  --max-steps 20 --threads 1 --log-level warn || { echo "FAIL: ds-pretrain (setup)"; exit 1; }
cp -r "$T/ck256" "$T/ck"
sed -i 's/"max_position_embeddings": *256/"max_position_embeddings": 1024/' "$T/ck/config.json"
grep -q '"max_position_embeddings": *1024' "$T/ck/config.json" || { echo "FAIL: context edit (setup)"; exit 1; }
COMMON=(--threads 1 --log-level warn)
RO=("$BIN" --ckpt "$T/ck" "${COMMON[@]}")
P=$FIX/rollout_prompts.jsonl

# ---------------------------------------------------------------------------------------------------------
# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
contains "$T/out" "--mtp-speculative" "--help prints the options on stdout"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-rollout " "--version names the program"
expect 2 "missing --ckpt" -- "$BIN" -i "$P" "${COMMON[@]}"
contains "$T/err" "ds-rollout: error: --ckpt is required" "missing --ckpt message"
expect 2 "unknown option" -- "${RO[@]}" -i "$P" --no-such-option
contains "$T/err" "ds-rollout: error:" "unknown option message"
expect 2 "unknown --template" -- "${RO[@]}" -i "$P" --template alpaca
expect 2 "negative --temperature" -- "${RO[@]}" -i "$P" --temperature -1
expect 2 "--top-p 0" -- "${RO[@]}" -i "$P" --top-p 0
expect 2 "-n 0" -- "${RO[@]}" -i "$P" -n 0
expect 2 "--max-new-tokens 0" -- "${RO[@]}" -i "$P" --max-new-tokens 0
expect 3 "a checkpoint directory that does not exist" -- "$BIN" --ckpt "$T/nope" -i "$P" "${COMMON[@]}"
contains "$T/err" "ds-rollout: error: checkpoint directory not found" "missing checkpoint message"

# ---------------------------------------------------------------------------------------------------------
# -n 3 on 2 prompts: 6 records, every field, the prompt record's other fields passed through unchanged
expect 0 "-n 3 on 2 prompts to -o FILE" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 -o "$T/r.jsonl"
check "6 records" test "$(nrec "$T/r.jsonl")" = 6
check "nothing on stdout with -o FILE" test ! -s "$T/out"
jqcheck "every record has every rollout field with its type" "$T/r.jsonl" 'all(.[];
  (.id|type) == "string" and (.group|type) == "string" and (.sample|type) == "number" and
  (.prompt|type) == "string" and (.completion|type) == "string" and
  (.completion_tokens|type) == "array" and (.completion_tokens|length) >= 1 and
  (.completion_tokens|all(type == "number" and . >= 0 and . < 300 and . == floor)) and
  (.logprobs|type) == "array" and (.logprobs|length) == (.completion_tokens|length) and
  (.logprobs|all(type == "number" and . <= 0)) and
  (.finish_reason == "stop" or .finish_reason == "length") and
  (.prompt_tokens|type) == "number" and .prompt_tokens > 0 and
  (.prompt_ids|type) == "array" and (.prompt_ids|length) == .prompt_tokens and
  (.prompt_ids|all(type == "number" and . >= 0 and . < 300)) and
  .template == "r1-zero" and .prefill == "" and .temperature == 1 and .top_p == 1 and .top_k == 0 and
  (.seed|type) == "number" and .id == .group + "#" + (.sample|tostring))'
jqcheck "ids: groups q-1 (given) and p1 (line index), samples 0..2 each" "$T/r.jsonl" \
  '(group_by(.group) | map([.[0].group, (map(.sample) | sort)])) == [["p1", [0, 1, 2]], ["q-1", [0, 1, 2]]]'
jqcheck "samples of a group share prompt, prompt_tokens, prompt_ids and seed" "$T/r.jsonl" \
  'group_by(.group) | all(map([.prompt, .prompt_tokens, .prompt_ids, .seed]) | unique | length == 1)'
jqcheck "no more than --max-new-tokens tokens; \"length\" ones exactly that many" "$T/r.jsonl" \
  'all(.[]; (.completion_tokens|length) <= 24 and (.finish_reason == "stop" or (.completion_tokens|length) == 24))'
jqcheck "the prompt field is the input's prompt" "$T/r.jsonl" \
  'map(select(.group == "q-1") | .prompt == "What is 3 + 4?") + map(select(.group == "p1") |
   .prompt == "Using the numbers [10, 5], make 15.") | length == 6 and all'
jqcheck "exactly the rollout fields plus the input's other fields" "$T/r.jsonl" \
  '(["id","group","sample","prompt","completion","completion_tokens","logprobs","finish_reason","prompt_tokens",
     "prompt_ids","template","prefill","temperature","top_p","top_k","seed"]) as $own |
   all(.[]; (keys - $own | sort) == (if .group == "q-1" then ["answer","meta","numbers","task"]
                                    else ["answer","nums","target","task"] end))'
for raw in '"answer":"7"' '"task":"arith"' '"numbers":[3, 4]' \
  '"meta":{"x":[1,2.50,{"y":null}],"z":"caf\u00e9 é","ok":true}' '"answer":15' '"task":"countdown"' \
  '"target":1.5e1' '"nums":[ 10 , 5 ]' '"prompt":"What is 3 + 4?"'; do
  check "passed through byte for byte, in its group's 3 records: $raw" test "$(grep -cF -- "$raw" "$T/r.jsonl")" = 3
done

# ---------------------------------------------------------------------------------------------------------
# Seeds: the same seed reproduces the run, another seed changes it; samples do not depend on the batch
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 >"$T/r2.jsonl" 2>/dev/null
check "the same --seed gives identical records" cmp -s <(LC_ALL=C sort "$T/r.jsonl") <(LC_ALL=C sort "$T/r2.jsonl")
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --seed 99 >"$T/r3.jsonl" 2>/dev/null
check "another --seed gives other samples" test "$(nrec "$T/r3.jsonl")" = 6 -a "$(gen "$T/r.jsonl")" != "$(gen "$T/r3.jsonl")"
check "samples of a group differ from one another at temperature 1" \
  test "$(jq -c 'select(.group == "q-1") | .completion_tokens' "$T/r.jsonl" | sort -u | wc -l)" = 3
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --max-batch 3 >"$T/r4.jsonl" 2>/dev/null
check "--max-batch 3 (one prompt at a time) gives the same samples as both prompts batched together" \
  test "$(gen "$T/r4.jsonl")" = "$(gen "$T/r.jsonl")"
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --page-size 4 >"$T/r5.jsonl" 2>/dev/null
check "--page-size 4 gives the same samples" test "$(gen "$T/r5.jsonl")" = "$(gen "$T/r.jsonl")"
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --prefill-tokens 4096 >"$T/r6.jsonl" 2>/dev/null
check "--prefill-tokens 4096 (both prompts right-padded in one prefill) gives the same samples" \
  test "$(gen "$T/r6.jsonl")" = "$(gen "$T/r.jsonl")"

# ---------------------------------------------------------------------------------------------------------
# Pipes and .zst: stdin/stdout and compressed files carry the same records
cat "$P" | "${RO[@]}" -n 3 --max-new-tokens 24 2>"$T/err" | cat >"$T/pipe.jsonl"
check "stdin -> stdout gives the same records as files" cmp -s "$T/pipe.jsonl" "$T/r.jsonl"
"${RO[@]}" -i - -o - -n 3 --max-new-tokens 24 <"$P" >"$T/dash.jsonl" 2>/dev/null
check "-i - -o - gives the same records" cmp -s "$T/dash.jsonl" "$T/r.jsonl"
if command -v zstd >/dev/null; then
  zstd -q -c "$P" >"$T/p.jsonl.zst"
  expect 0 ".zst in, .zst out" -- "${RO[@]}" -i "$T/p.jsonl.zst" -o "$T/r.jsonl.zst" -n 3 --max-new-tokens 24
  check ".zst output is zstd and holds the same records" cmp -s <(zstd -dc "$T/r.jsonl.zst") "$T/r.jsonl"
  zstd -dc "$T/p.jsonl.zst" | "${RO[@]}" -n 3 --max-new-tokens 24 -o "$T/r2.jsonl.zst" 2>/dev/null
  check "stdin -> .zst file holds the same records" cmp -s <(zstd -dc "$T/r2.jsonl.zst") "$T/r.jsonl"
else
  echo "SKIP: zstd not found (.zst checks)"
fi

# ---------------------------------------------------------------------------------------------------------
# Sampling options
expect 0 "--temperature 0" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --temperature 0 -o "$T/g.jsonl"
# (the log-probs of a group's rows agree to rounding: BLAS may treat rows at different batch positions differently)
jqcheck "greedy: the samples of a group are identical" "$T/g.jsonl" \
  'length == 6 and (group_by(.group) | all(map([.completion, .completion_tokens]) | unique | length == 1)) and
   (group_by(.group) | all(map(.logprobs) | transpose | all(max - min < 1e-6)))'
jqcheck "greedy: the records say temperature 0" "$T/g.jsonl" 'all(.[]; .temperature == 0)'
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --top-k 1 >"$T/k1.jsonl" 2>/dev/null
check "--top-k 1 draws the greedy tokens" test "$(gen "$T/k1.jsonl")" = "$(gen "$T/g.jsonl")"
check "--top-k 1: log-probs under softmax(logits/1), as greedy's" \
  test "$(jq -c '[.id, .logprobs]' "$T/k1.jsonl" | sort)" = "$(jq -c '[.id, .logprobs]' "$T/g.jsonl" | sort)"
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --top-p 0.000001 >"$T/p0.jsonl" 2>/dev/null
check "a tiny --top-p draws the greedy tokens" test "$(gen "$T/p0.jsonl")" = "$(gen "$T/g.jsonl")"
"${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --temperature 0.5 >"$T/t5.jsonl" 2>/dev/null
jqcheck "--temperature 0.5 is recorded and changes the samples" "$T/t5.jsonl" \
  'length == 6 and all(.[]; .temperature == 0.5)'
check "--temperature 0.5 samples differ from temperature 1" test "$(gen "$T/t5.jsonl")" != "$(gen "$T/r.jsonl")"

expect 0 "--max-new-tokens 5" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 5 -o "$T/m5.jsonl"
jqcheck "--max-new-tokens 5 caps completion_tokens and logprobs" "$T/m5.jsonl" \
  'length == 6 and all(.[]; (.completion_tokens|length) <= 5 and (.logprobs|length) == (.completion_tokens|length)
   and (.finish_reason == "stop" or (.completion_tokens|length) == 5))'
check "--max-new-tokens 5: a prefix of the 24-token samples" test \
  "$(jq -c '[.id, .completion_tokens]' "$T/m5.jsonl" | sort)" = \
  "$(jq -c '[.id, .completion_tokens[:5]]' "$T/r.jsonl" | sort)"

# Stop strings: samples end at the first of them, which the completion does not contain
expect 0 "--stop (repeated)" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 40 --template raw --stop e --stop t --stop a \
  -o "$T/st.jsonl"
jqcheck "--stop: some samples stop, no completion contains a stop string" "$T/st.jsonl" \
  'length == 6 and any(.[]; .finish_reason == "stop") and
   all(.[]; (.completion | test("[eta]") | not))'
# r1-zero keeps the matched stop string (its "</answer>" is part of the answer format): the text ends at it
expect 0 "--stop with r1-zero keeps the stop string" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 40 --stop e \
  -o "$T/sk.jsonl"
jqcheck "--stop (r1-zero): a completion with the stop string ends right after its first occurrence" "$T/sk.jsonl" \
  'length == 6 and any(.[]; .completion | test("e")) and
   all(.[]; (.completion | test("e") | not) or ((.completion | endswith("e")) and (.completion | split("e") | length) == 2))'

# --ignore-eos: no sample stops at EOS, each runs to --max-new-tokens; the draws are the same, so a sample that
# ended at EOS without the flag is a prefix (EOS included) of the same sample with it
expect 0 "long raw samples (some end at EOS)" -- "${RO[@]}" -i "$P" -n 8 --max-new-tokens 120 --template raw \
  -o "$T/eos.jsonl"
jqcheck "without --ignore-eos some samples end with EOS (finish_reason stop)" "$T/eos.jsonl" \
  'length == 16 and any(.[]; .finish_reason == "stop")'
expect 0 "--ignore-eos" -- "${RO[@]}" -i "$P" -n 8 --max-new-tokens 120 --template raw --ignore-eos -o "$T/ie.jsonl"
jqcheck "--ignore-eos: every sample has exactly 120 tokens and finish_reason length" "$T/ie.jsonl" \
  'length == 16 and all(.[]; (.completion_tokens|length) == 120 and (.logprobs|length) == 120 and
   .finish_reason == "length")'
jqcheck "--ignore-eos: a sample that stopped at EOS is a prefix of the same sample with --ignore-eos" "$T/ie.jsonl" \
  '(map({key: .id, value: .completion_tokens}) | from_entries) as $ie |
   all($eos[]; .completion_tokens == $ie[.id][:(.completion_tokens|length)])' --slurpfile eos "$T/eos.jsonl"
expect 2 "--precision fp16" -- "${RO[@]}" -i "$P" --precision fp16
expect 2 "--precision bf16 on the CPU" -- "${RO[@]}" -i "$P" --precision bf16
contains "$T/err" "bf16 (mixed precision) needs --device cuda" "--precision bf16 on the CPU: the message says why"

# ---------------------------------------------------------------------------------------------------------
# Templates and the <think> prefill
expect 0 "--prefill-think (r1-zero)" -- "${RO[@]}" -i "$P" -n 2 --max-new-tokens 8 --prefill-think -o "$T/pt.jsonl"
jqcheck "--prefill-think: completion starts with \"<think>\\n\", prefill is \"<think>\\n\"" "$T/pt.jsonl" \
  'length == 4 and all(.[]; (.completion | startswith("<think>\n")) and .prefill == "<think>\n")'
jqcheck "--prefill-think: the prefill is in the prompt, not in completion_tokens" "$T/pt.jsonl" \
  '(map(.prompt_tokens) | min) > ($plain | map(.prompt_tokens) | min) and all(.[]; (.completion_tokens|length) <= 8)' \
  --slurpfile plain "$T/r.jsonl"
for tmpl in chat raw; do
  expect 0 "--template $tmpl" -- "${RO[@]}" -i "$P" -n 2 --max-new-tokens 8 --template $tmpl -o "$T/$tmpl.jsonl"
  jqcheck "--template $tmpl: 4 records saying template \"$tmpl\"" "$T/$tmpl.jsonl" \
    "length == 4 and all(.[]; .template == \"$tmpl\" and .prefill == \"\")"
done
jqcheck "prompt lengths of each group: r1-zero's wrapper > chat's special tokens > raw" "$T/r.jsonl" \
  'def len($g): map(select(.group == $g) | .prompt_tokens) | first;
   . as $r | all("q-1", "p1"; . as $g | ($r | len($g)) > ($chat | len($g)) and ($chat | len($g)) > ($raw | len($g)))' \
  --slurpfile chat "$T/chat.jsonl" --slurpfile raw "$T/raw.jsonl"
expect 0 "--template chat --prefill-think" -- "${RO[@]}" -i "$P" -n 2 --max-new-tokens 8 --template chat \
  --prefill-think -o "$T/chatpt.jsonl"
jqcheck "--template chat --prefill-think: completion starts with \"<think>\\n\"" "$T/chatpt.jsonl" \
  'length == 4 and all(.[]; (.completion | startswith("<think>\n")) and .prefill == "<think>\n")'
expect 0 "--template chat with {\"messages\"} records" -- "${RO[@]}" -i "$FIX/rollout_messages.jsonl" -n 2 \
  --max-new-tokens 8 --template chat -o "$T/msg.jsonl"
jqcheck "{\"messages\"}: passed through, no prompt field; {\"prompt\"} still works" "$T/msg.jsonl" \
  'length == 4 and all(.[] | select(.group == "m-1"); (.messages | length) == 2 and (has("prompt") | not)) and
   all(.[] | select(.group == "m-2"); .prompt == "What is 6 + 1?")'
contains "$T/msg.jsonl" '"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What is 2 + 2?"}]' \
  "{\"messages\"} passed through byte for byte"

# ---------------------------------------------------------------------------------------------------------
# MTP speculative decoding: greedy, the same completions as plain decoding
expect 0 "--mtp-speculative --temperature 0" -- "$BIN" --ckpt "$T/ck" --threads 1 -i "$P" -n 3 --max-new-tokens 24 \
  --temperature 0 --mtp-speculative -o "$T/mtp.jsonl"
check "--mtp-speculative (greedy): the same completions and tokens as without" \
  test "$(gen "$T/mtp.jsonl")" = "$(gen "$T/g.jsonl")"
jqcheck "--mtp-speculative (greedy): the same log-probs (to 1e-6)" "$T/mtp.jsonl" \
  '(sort_by(.id) | map(.logprobs)) as $a | ($plain | sort_by(.id) | map(.logprobs)) as $b |
   [range(0; $a | length) as $i | range(0; $a[$i] | length) as $j | ($a[$i][$j] - $b[$i][$j]) | fabs] | max < 1e-6' \
  --slurpfile plain "$T/g.jsonl"
contains "$T/err" "MTP acceptance" "--mtp-speculative reports the acceptance rate"
expect 0 "--mtp-speculative at temperature 1" -- "${RO[@]}" -i "$P" -n 3 --max-new-tokens 24 --mtp-speculative \
  -o "$T/mtp1.jsonl"
jqcheck "--mtp-speculative at temperature 1: 6 complete records" "$T/mtp1.jsonl" \
  'length == 6 and all(.[]; (.logprobs|length) == (.completion_tokens|length) and (.completion_tokens|length) <= 24)'

# ---------------------------------------------------------------------------------------------------------
# Bad input: exit 3, one "ds-rollout: error: ... (file:line)" line; the samples of the good records before it kept
bad_record() {  # bad_record NAME MESSAGE_START
  local f=$FIX/rollout_$1.jsonl name=$1 pat="^ds-rollout: error: $2.*rollout_$1.jsonl:2)\$"
  expect 3 "$name (line 2 of 3) to stdout" -- "${RO[@]}" -i "$f" -n 3 --max-new-tokens 6
  check "$name: one error line naming rollout_$name.jsonl:2" eval \
    '[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$pat" "$T/err"'
  check "$name: stdout holds the 3 samples of line 1, nothing of line 3" \
    test "$(jq -r .id "$T/out" | sort | tr '\n' ' ')" = "g1#0 g1#1 g1#2 "
  rm -f "$T/bad.jsonl"
  expect 3 "$name (line 2 of 3) to -o FILE" -- "${RO[@]}" -i "$f" -n 3 --max-new-tokens 6 -o "$T/bad.jsonl"
  check "$name: -o FILE exists with the 3 samples of line 1" \
    test "$(jq -r .id "$T/bad.jsonl" 2>/dev/null | sort | tr '\n' ' ')" = "g1#0 g1#1 g1#2 "
  expect 3 "$name (line 2 of 3) on stdin" -- "${RO[@]}" -n 3 --max-new-tokens 6 <"$f"
  check "$name on stdin: the error names <stdin>:2" grep -q "^ds-rollout: error: .*(<stdin>:2)$" "$T/err"
  check "$name on stdin: stdout holds the samples of line 1" test "$(nrec "$T/out")" = 3
  expect 0 "$name with --skip-bad" -- "${RO[@]}" -i "$f" -n 3 --max-new-tokens 6 --skip-bad -o "$T/skip.jsonl"
  check "$name --skip-bad: a warning naming line 2" grep -q "^ds-rollout: warning: .*rollout_$name.jsonl:2)" "$T/err"
  check "$name --skip-bad: the samples of lines 1 and 3" \
    test "$(jq -r .id "$T/skip.jsonl" | sort | tr '\n' ' ')" = "g1#0 g1#1 g1#2 g3#0 g3#1 g3#2 "
}
bad_record bad_json "malformed JSON"
bad_record no_prompt "missing field 'prompt'"
echo '{"id":"x","prompt":5}' >"$T/num.jsonl"
expect 3 "a prompt that is not a string" -- "${RO[@]}" -i "$T/num.jsonl"
contains "$T/err" "num.jsonl:1)" "not a string: names num.jsonl:1"
expect 3 "--template raw on a {\"messages\"}-only record" -- "${RO[@]}" -i "$FIX/rollout_messages.jsonl" --template raw
contains "$T/err" "rollout_messages.jsonl:1)" "{\"messages\"} with --template raw: names line 1"
expect 3 "an input file that does not exist" -- "${RO[@]}" -i "$T/nope.jsonl"
: >"$T/empty.jsonl"
expect 0 "an empty input file" -- "${RO[@]}" -i "$T/empty.jsonl" -o "$T/empty_out.jsonl"
check "an empty input gives an empty output" test -f "$T/empty_out.jsonl" -a ! -s "$T/empty_out.jsonl"

# Prompts beyond the context
expect 3 "a prompt longer than --max-context (line 2)" -- "${RO[@]}" -i "$FIX/rollout_long.jsonl" --template raw \
  --max-context 30 -n 2 --max-new-tokens 4
check "--max-context: the error names rollout_long.jsonl:2 and the context" \
  grep -q "^ds-rollout: error: prompt of [0-9]* tokens does not fit the context of 30 (.*rollout_long.jsonl:2)$" "$T/err"
check "--max-context: the samples of line 1 are out" test "$(jq -r .id "$T/out" | sort | tr '\n' ' ')" = "s#0 s#1 "
expect 0 "--max-context with --skip-bad" -- "${RO[@]}" -i "$FIX/rollout_long.jsonl" --template raw --max-context 30 \
  -n 2 --max-new-tokens 40 --skip-bad -o "$T/ctx.jsonl"
jqcheck "--max-context: prompt + completion within the context" "$T/ctx.jsonl" \
  'length == 2 and all(.[]; .prompt_tokens + (.completion_tokens|length) <= 30)'
expect 3 "the r1-zero prompt beyond the model's 256-token context" -- "$BIN" --ckpt "$T/ck256" "${COMMON[@]}" -i "$P"
contains "$T/err" "does not fit the context of 256 (${P}:1)" "model context: names rollout_prompts.jsonl:1"

# An output that cannot be written: non-zero, a clear message, no file
: >"$T/afile"
unwritable() {  # unwritable DESCRIPTION PATH: a non-zero exit, one error line naming PATH, nothing on stdout
  "${RO[@]}" -i "$P" -o "$2" >"$T/out" 2>"$T/err"
  local rc=$? msg="ds-rollout: error: cannot create $2"
  check "$1: non-zero exit ($rc)" test "$rc" -ne 0
  check "$1: one error line naming the path" eval \
    '[ "$(wc -l <"$T/err")" -eq 1 ] && grep -qF "$msg" "$T/err"'
  check "$1: nothing on stdout" test ! -s "$T/out"
}
unwritable "-o under a regular file" "$T/afile/r.jsonl"
unwritable "-o in a directory that does not exist" "$T/no/such/dir/r.jsonl"
check "unwritable -o: no file, no temporary left" eval '[ -z "$(ls -A "$T/no" 2>/dev/null)" ] && ! compgen -G "$T/afile*.tmp*" >/dev/null'

echo "($SECONDS s)"
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "ds-rollout CLI: all checks passed"
