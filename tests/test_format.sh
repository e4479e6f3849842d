#!/bin/bash
# The tree is formatted: clang-format (.clang-format: kernel style, tabs, 120 columns) would
# change no tracked C++ file. `make format` fixes what this reports.
. "$(dirname "$0")/lib.sh"
cd "$TOP"
if ! command -v clang-format >/dev/null 2>&1; then
	bad "clang-format is not installed (make deps installs it)"
	finish
	exit 1
fi
files=$(git ls-files '*.cpp' '*.h' 2>/dev/null)
[ -n "$files" ] || { bad "no tracked C++ files found (not a git checkout?)"; finish; exit 1; }
n=0
for f in $files; do
	if ! clang-format --dry-run -Werror --style=file "$f" >/dev/null 2>&1; then
		n=$((n + 1))
		[ $n -le 10 ] && echo "not formatted: $f"
	fi
done
[ $n -eq 0 ] && ok || bad "$n files are not formatted (make format)"
finish
