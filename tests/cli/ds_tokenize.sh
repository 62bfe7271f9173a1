#!/usr/bin/env bash
# Golden CLI test of ds-tokenize: help/version, train + encode + decode round trip, exit codes 2 and 3 with
# file:line messages, and no output file after a failure. Usage: ds_tokenize.sh PATH/TO/ds-tokenize
set -u
BIN=${1:?usage: ds_tokenize.sh PATH/TO/ds-tokenize}
FIX=$(cd "$(dirname "$0")/fixtures" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/ds_tokenize_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

. "$(dirname "$0")/lib.sh"

# --help, --version, usage errors (exit 2)
expect 0 "--help" -- "$BIN" --help
contains "$T/out" "encode" "--help lists the subcommands"
expect 0 "train --help" -- "$BIN" train --help
contains "$T/out" "--vocab-size" "train --help"
expect 0 "--version" -- "$BIN" --version
contains "$T/out" "ds-tokenize " "--version"
expect 2 "unknown option" -- "$BIN" train --no-such-option -i "$FIX/tokenize_corpus.jsonl" -o "$T/x"
contains "$T/err" "ds-tokenize: error:" "usage error message"
expect 2 "no subcommand" -- "$BIN"
expect 2 "missing --tokenizer" -- "$BIN" encode -i "$FIX/tokenize_samples.jsonl"
expect 2 "vocabulary too small" -- "$BIN" train -i "$FIX/tokenize_corpus.jsonl" -o "$T/small" --vocab-size 100
[ -e "$T/small" ] && fail "a refused train left $T/small"

# train: a directory with the HF tokenizer files; a single .model file; deterministic
expect 0 "train" -- "$BIN" train -i "$FIX/tokenize_corpus.jsonl" -o "$T/tok" --vocab-size 400 --threads 2
for f in tokenizer.model tokenizer_config.json special_tokens_map.json; do
  [ -s "$T/tok/$f" ] || fail "train did not write $f"
done
contains "$T/tok/tokenizer_config.json" '"chat_template_name": "deepseek-r1"' "tokenizer_config.json"
expect 0 "train from stdin to a .model file" -- \
  sh -c "'$BIN' train -i - -o '$T/again.model' --vocab-size 400 --threads 2 < '$FIX/tokenize_corpus.jsonl'"
cmp -s "$T/tok/tokenizer.model" "$T/again.model" || fail "training is not deterministic"
# Another thread count gives the same pieces (the model records num_threads, so compare encodings).
expect 0 "train with 1 thread" -- "$BIN" train -i "$FIX/tokenize_corpus.jsonl" -o "$T/one.model" --vocab-size 400 --threads 1
"$BIN" encode --tokenizer "$T/one.model" -i "$FIX/tokenize_corpus.jsonl" -o "$T/ids1.jsonl" &&
  "$BIN" encode --tokenizer "$T/again.model" -i "$FIX/tokenize_corpus.jsonl" -o "$T/ids2.jsonl" &&
  cmp -s "$T/ids1.jsonl" "$T/ids2.jsonl" || fail "the thread count changed the tokenizer"

# encode -> decode round trip over the samples (special tokens, Chinese, unseen characters, spaces, escapes)
expect 0 "encode" -- "$BIN" encode --tokenizer "$T/tok" -i "$FIX/tokenize_samples.jsonl" -o "$T/ids.jsonl"
[ "$(wc -l < "$T/ids.jsonl")" -eq "$(wc -l < "$FIX/tokenize_samples.jsonl")" ] || fail "encode: one line per record"
expect 0 "decode" -- "$BIN" decode --tokenizer "$T/tok/tokenizer.model" -i "$T/ids.jsonl" -o "$T/text.jsonl"
cmp -s "$T/text.jsonl" "$FIX/tokenize_samples.jsonl" || { fail "decode(encode(x)) != x"; diff "$T/text.jsonl" "$FIX/tokenize_samples.jsonl" >&2; }
expect 0 "pipe" -- sh -c "'$BIN' encode --tokenizer '$T/tok' < '$FIX/tokenize_samples.jsonl' | '$BIN' decode --tokenizer '$T/tok' > '$T/piped.jsonl'"
cmp -s "$T/piped.jsonl" "$FIX/tokenize_samples.jsonl" || fail "stdin/stdout round trip differs"

# special tokens are single ids at fixed positions; digits are split one per token
printf '{"text":"<｜User｜><｜Assistant｜><think></think><｜end▁of▁sentence｜>"}\n' > "$T/special.jsonl"
expect 0 "encode specials" -- "$BIN" encode --tokenizer "$T/tok" -i "$T/special.jsonl" --add-bos
contains "$T/out" '{"ids":[0,4,5,6,7,1]}' "special token ids"
printf '9876543210\n' > "$T/digits.txt"
expect 0 "encode digits" -- "$BIN" encode --tokenizer "$T/tok" -i "$T/digits.txt" --text-lines --pieces
contains "$T/out" '"pieces":["9","8","7","6","5","4","3","2","1","0"]' "digits split"

# bad input (exit 3): file:line in the message, no output written
expect 3 "bad JSONL line" -- "$BIN" train -i "$FIX/tokenize_bad.jsonl" -o "$T/bad_out" --vocab-size 300
contains "$T/err" "tokenize_bad.jsonl:3" "bad line location"
[ -e "$T/bad_out" ] && fail "a failed train left $T/bad_out"
expect 3 "bad JSONL line (.model)" -- "$BIN" train -i "$FIX/tokenize_bad.jsonl" -o "$T/bad.model" --vocab-size 300
[ -e "$T/bad.model" ] && fail "a failed train left $T/bad.model"
expect 3 "missing input" -- "$BIN" train -i "$T/does-not-exist.jsonl" -o "$T/missing_out"
contains "$T/err" "does-not-exist.jsonl" "missing input named"
[ -e "$T/missing_out" ] && fail "a failed train left $T/missing_out"
: > "$T/empty.jsonl"
expect 3 "empty corpus" -- "$BIN" train -i "$T/empty.jsonl" -o "$T/empty_out"
contains "$T/err" "empty corpus" "empty corpus message"
expect 3 "encode bad line" -- "$BIN" encode --tokenizer "$T/tok" -i "$FIX/tokenize_bad.jsonl" -o "$T/partial.jsonl"
contains "$T/err" "tokenize_bad.jsonl:3" "encode bad line location"
[ -e "$T/partial.jsonl" ] && fail "a failed encode left a partial output file"
printf '{"ids":[5,6]}\n{"ids":[5,100000]}\n' > "$T/ids_bad.jsonl"
expect 3 "id outside the vocabulary" -- "$BIN" decode --tokenizer "$T/tok" -i "$T/ids_bad.jsonl" -o "$T/dec.jsonl"
contains "$T/err" "ids_bad.jsonl:2" "bad id location"
[ -e "$T/dec.jsonl" ] && fail "a failed decode left a partial output file"
expect 3 "missing tokenizer" -- "$BIN" encode --tokenizer "$T/no-tok" -i "$FIX/tokenize_samples.jsonl"

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
echo "ds-tokenize CLI: all checks passed"
