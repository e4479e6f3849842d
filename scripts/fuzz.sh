#!/bin/sh
# make fuzz: build the libFuzzer targets with clang (knlp_base only, no libtorch; ASan +
# UBSan) into build-fuzz/ and run each for FUZZ_SECONDS from its committed seed corpus
# (tests/fuzz/corpus/<target>) plus the corpus grown by earlier runs (build-fuzz/corpus).
# A crash, sanitizer report, uncaught non-knlp exception, broken invariant or out-of-memory
# stops the target and leaves its input in build-fuzz/crashes/; copy it to
# tests/fuzz/regressions/<target>/ once fixed (make check runs every regression input).
# usage: scripts/fuzz.sh [SECONDS] [TARGETS...]
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift 2>/dev/null || true
B="$top/build-fuzz"
CXX=${FUZZ_CXX:-clang++}
command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found (apt-get install clang libclang-rt-14-dev)"; exit 1; }
cmake -S "$top" -B "$B" -G Ninja -DKNLP_FUZZ=ON -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
ninja -C "$B" || exit 1
targets=${*:-"config set tokenizer tokens idx cifar npz safetensors gguf sweep results hellaswag pnm"}
mkdir -p "$B/crashes"
report="$B/fuzz-report.json"
echo "[" >"$report"
sep=
failed=0
printf "%-12s %10s %10s %8s %8s %s\n" target runs exec/s cov ft result
for t in $targets; do
	mkdir -p "$B/corpus/$t"
	log="$B/fuzz-$t.log"
	"$B/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
		-artifact_prefix="$B/crashes/$t-" "$B/corpus/$t" "$top/tests/fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	res=ok
	[ $rc -eq 0 ] || { res="FOUND: $(grep -m1 -E 'ERROR|runtime error|invariant|what\(\)' "$log")"; failed=$((failed + 1)); }
	printf "%-12s %10s %10s %8s %8s %s\n" "$t" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$res"
	printf '%s  {"target": "%s", "seconds": %s, "runs": %s, "exec_per_sec": %s, "cov": %s, "ft": %s, "ok": %s}' \
		"$sep" "$t" "$secs" "${runs:-0}" "${eps:-0}" "${cov:-0}" "${ft:-0}" "$([ $rc -eq 0 ] && echo true || echo false)" >>"$report"
	sep=",
"
done
printf '\n]\n' >>"$report"
echo "report: $report; inputs that failed: $B/crashes/"
[ $failed -eq 0 ]
