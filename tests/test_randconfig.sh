#!/bin/bash
# The randconfig smoke sweep, small: 6 fixed-seed random configurations, each trains a few
# steps on tiny shapes or is rejected with one clear line; nothing crashes or hangs.
. "$(dirname "$0")/lib.sh"
bash "$TOP/scripts/randconfig_sweep.sh" "$KNLP" 6 101 "$T/sweep" >"$T/sweep.log" 2>&1 && ok ||
	bad "randconfig sweep: $(grep -E 'FAILED|sweep:' "$T/sweep.log")"
grep -q "randconfig sweep: 6 configurations" "$T/sweep.log" && ok || bad "sweep summary missing: $(tail -3 "$T/sweep.log")"
finish
