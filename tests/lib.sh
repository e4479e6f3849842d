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
finish() {
	echo "$pass passed, $fail failed"
	[ $fail -eq 0 ]
}
