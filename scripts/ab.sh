#!/bin/bash
# Paired A/B timing of two commands that print a JSON line with a rate (knlp_bench, the
# scripts/ref/*_eager.py baselines): A and B run alternately ROUNDS times in this one
# invocation, and the median of the B/A ratios is reported, which a shared machine's drift
# between runs affects less than two separate medians. How a change's gain in
# docs/performance.md was measured, e.g. a build of the parent commit against this one:
#   scripts/ab.sh 8 "old/knlp_bench train 4 4 128 64 12 50304 20" "build/knlp_bench train 4 4 128 64 12 50304 20"
# usage: scripts/ab.sh ROUNDS "COMMAND A" "COMMAND B" [FIELD (default tokens_per_sec)]
set -eu
[ $# -ge 3 ] || { echo "usage: $0 ROUNDS \"COMMAND A\" \"COMMAND B\" [FIELD]" >&2; exit 2; }
exec /usr/bin/python3 - "$@" <<'PY'
import json, statistics, subprocess, sys
rounds, cmds, field = int(sys.argv[1]), sys.argv[2:4], sys.argv[4] if len(sys.argv) > 4 else "tokens_per_sec"
def rate(cmd):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        sys.exit(f"ab.sh: {cmd}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return float(json.loads(lines[-1])[field])
a, b = [], []
for i in range(rounds):
    a.append(rate(cmds[0]))
    b.append(rate(cmds[1]))
    print(f"round {i + 1}: A {a[-1]:.1f}  B {b[-1]:.1f}  B/A {b[-1] / a[-1]:.3f}", flush=True)
r = [y / x for x, y in zip(a, b)]
print(json.dumps({"field": field, "a_median": statistics.median(a), "b_median": statistics.median(b),
                  "paired_median_ratio": statistics.median(r), "min_ratio": min(r), "max_ratio": max(r),
                  "b_faster": sum(x > 1 for x in r), "rounds": rounds}))
PY
