#!/bin/sh
# Write the git version of the source tree into a header, touching it only when it changes.
src=$1 out=$2
v=$(git -C "$src" describe --always --dirty --tags 2>/dev/null || echo unknown)
line="#define KNLP_GIT_VERSION \"$v\""
[ -f "$out" ] && [ "$(cat "$out")" = "$line" ] && exit 0
echo "$line" > "$out.tmp" && mv "$out.tmp" "$out"
