#!/bin/bash
# pin.sh CMD...: run CMD on a core of its own while ctest runs tests side by side.
#
# ctest -j2 on 2 cores starts two tests at once, and each would start a thread per core:
# four busy threads on two cores, whose OpenMP barriers then spin against each other. Two
# sh tests measured 121 s side by side that way and 82 s each on a core of its own. The
# wrapper takes the first free core (a lock file per core, held until CMD and its
# children exit) and runs CMD under taskset there; knlp sizes its thread pool from the
# affinity it is given. With no core free (more tests at once than cores), no taskset or
# flock, or KNLP_TEST_PIN=0, CMD runs as it is.
set -u
if [ "${KNLP_TEST_PIN:-1}" != 0 ] && command -v taskset >/dev/null && command -v flock >/dev/null; then
	list=$(taskset -cp $$ 2>/dev/null | sed 's/.*: *//')
	cpus=()
	IFS=, read -ra parts <<<"$list"
	for p in "${parts[@]}"; do
		case "$p" in
		*-*) for ((c = ${p%-*}; c <= ${p#*-}; c++)); do cpus+=("$c"); done ;;
		[0-9]*) cpus+=("$p") ;;
		esac
	done
	if [ ${#cpus[@]} -gt 1 ]; then
		dir=${TMPDIR:-/tmp}/knlp-test-cores.$(id -u)
		mkdir -p "$dir" 2>/dev/null
		for c in "${cpus[@]}"; do
			exec {fd}>>"$dir/$c" || continue
			if flock -n "$fd"; then
				exec taskset -c "$c" "$@"
			fi
			exec {fd}>&-
		done
	fi
fi
exec "$@"
