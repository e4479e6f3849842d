#!/bin/bash
# docs/robustness.md's bad-input catalogue cannot drift: every row names a test file that
# exists and asserts exactly the error text the row quotes; and every fuzz target of the
# harness is documented.
. "$(dirname "$0")/lib.sh"
doc="$TOP/docs/robustness.md"
rows=0
while IFS= read -r line; do
	# | class | `error text` | tests/file |
	err=$(printf '%s\n' "$line" | sed -n 's/^| [^|]* | `\(.*\)` | \(tests\/[^ |]*\)[^|]* |$/\1/p')
	file=$(printf '%s\n' "$line" | sed -n 's/^| [^|]* | `.*` | \(tests\/[^ |]*\)[^|]* |$/\1/p')
	[ -n "$err" ] || continue
	rows=$((rows + 1))
	if [ ! -f "$TOP/$file" ]; then
		bad "catalogue row names a missing test file: $file"
	elif grep -qF -- "$err" "$TOP/$file"; then
		ok
	else
		bad "catalogue: $file does not assert '$err'"
	fi
done < <(sed -n '/^## Bad-input catalogue/,$p' "$doc")
[ "$rows" -ge 30 ] && ok || bad "the catalogue has only $rows rows"
targets=$(grep -o '{"[a-z]*", fuzz_' "$TOP/tests/fuzz/harness.cpp" | sed 's/{"\([a-z]*\)".*/\1/')
[ "$(echo $targets | wc -w)" -ge 10 ] && ok || bad "found only these fuzz targets: $targets"
for t in $targets; do
	grep -q "^| $t |" "$doc" && ok || bad "fuzz target $t is not documented in docs/robustness.md"
done
finish
