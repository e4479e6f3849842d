# Shared helpers for the shell tests (sourced, not run: CMake only runs test_*.sh).
set -u
KNLP=${1:-build/knlp}
case "$KNLP" in /*) ;; *) KNLP="$PWD/$KNLP" ;; esac
PYTHON=/usr/bin/python3
TOP=$PWD
T=$(mktemp -d /tmp/knlp-sh-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect_fail "substring" cmd...: the command must exit non-zero and print the substring on one line
expect_fail() {
	want=$1; shift
	out=$("$@" 2>&1); rc=$?
	if [ $rc -eq 0 ]; then bad "expected failure: $* (output: $out)"; return; fi
	if ! printf '%s\n' "$out" | grep -qF -- "$want"; then bad "missing '$want' from: $*: $out"; return; fi
	ok
}
# cycle_data DIR: a byte-level token folder of a fixed cycle of four sentences (every
# continuation is predictable from 32 bytes of context), prepared by knlp in the cwd.
cycle_data() {
	$PYTHON - <<'PY'
s = " ".join(["the driver maps the page.", "a module frees a buffer.", "this patch locks memory.",
              "the scheduler wakes a task."] * 1000)
open("corpus.txt", "w").write(s)
PY
	"$KNLP" prepare --corpus corpus.txt --out "$1" >/dev/null 2>&1
}
finish() {
	echo "$pass passed, $fail failed"
	[ $fail -eq 0 ]
}
