# Shared helpers of the golden CLI tests (sourced; the script sets T, its scratch directory, and fails=0).
# Each check prints one "PASS: ..." or "FAIL: ..." line; the script exits with the count of failures.

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() {  # check DESCRIPTION CONDITION...: PASS when the command CONDITION succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# expect RC DESCRIPTION -- CMD...: runs CMD (stdout > $T/out, stderr > $T/err), checks the exit status.
expect() {
  local want=$1 what=$2; shift 3
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then pass "$what (exit $rc)"; else
    fail "$what: exit $rc, expected $want"; sed 's/^/  stderr: /' "$T/err" | tail -5
  fi
}
contains() {  # contains FILE TEXT DESCRIPTION
  if grep -qF -- "$2" "$1"; then pass "$3"; else fail "$3: '$2' not in $(basename "$1")"; sed 's/^/  /' "$1" | head -5; fi
}
json_int() { sed -n "s/.*\"$2\": *\([0-9][0-9]*\).*/\1/p" "$1" | head -1; }  # json_int FILE KEY (pretty JSON)
# The "loss" (or other) field of every step record of a metrics file, "STEP VALUE" per line, as written.
field_by_step() { sed -n "s/^{\"step\":\([0-9]*\),.*\"$2\":\([^,}]*\).*/\1 \2/p" "$1"; }
step_records() { if [ -f "$1" ]; then grep -c '"loss":' "$1"; else echo 0; fi; }
CKPT_FILES="config.json model.safetensors tokenizer.model tokenizer_config.json optimizer.safetensors
trainer_state.json generation_config.json"
complete_ckpt() {  # complete_ckpt DIR: every checkpoint file present and non-empty
  local f
  for f in $CKPT_FILES; do [ -s "$1/$f" ] || { echo "  $1/$f missing" >&2; return 1; }; done
}
no_leftovers() {  # no_leftovers DIR: neither DIR nor DIR.tmp-* / DIR.old-* exist
  ! compgen -G "$1" >/dev/null && ! compgen -G "$1.tmp-*" >/dev/null && ! compgen -G "$1.old-*" >/dev/null
}
tree_sum() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs md5sum); }
