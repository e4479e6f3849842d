#!/bin/bash
# The Kconfig workflow: help text, preset round trips, fragments, randconfig, listnewconfig.
. "$(dirname "$0")/lib.sh"
K="$PYTHON $TOP/scripts/kconfig.py"
export KCONFIG_CONFIG=$T/.config

$K helpcheck >/dev/null && ok || bad "helpcheck: symbols without help"

# Each preset survives defconfig -> olddefconfig -> savedefconfig unchanged (as a set of lines).
for p in $(ls "$TOP/defconfigs"); do
	$K defconfig "$p" >/dev/null 2>&1 || { bad "defconfig $p"; continue; }
	$K olddefconfig >/dev/null || bad "olddefconfig $p"
	$K savedefconfig "$T/min" >/dev/null || bad "savedefconfig $p"
	if diff <(grep '^CONFIG_\|^# CONFIG_' "$TOP/defconfigs/$p" | sort) <(grep '^CONFIG_\|^# CONFIG_' "$T/min" | sort) >"$T/d"; then
		ok
	else
		bad "preset $p does not round-trip:"; cat "$T/d"
	fi
	"$KNLP" config show --config "$KCONFIG_CONFIG" >/dev/null && ok || bad "knlp rejects preset $p"
done

# Unknown preset and unknown symbols in a fragment are errors.
expect_fail "unknown preset 'no-such-preset'" $K defconfig no-such-preset
printf 'CONFIG_NO_SUCH_SYMBOL=y\n' >"$T/frag"
expect_fail "unknown symbol CONFIG_NO_SUCH_SYMBOL" $K defconfig gpt2-tiny-cpu "$T/frag"

# A fragment merges over the preset; a value that cannot survive is reported.
printf 'CONFIG_SEED=7\nCONFIG_GPT2_N_LAYER=999\n' >"$T/frag"
out=$($K defconfig gpt2-tiny-cpu "$T/frag" 2>&1)
grep -q '^CONFIG_SEED=7$' "$KCONFIG_CONFIG" && ok || bad "fragment value not merged"
printf '%s\n' "$out" | grep -q "CONFIG_GPT2_N_LAYER=999 did not survive" && ok || bad "no warning for lost value: $out"

# listnewconfig names what a partial .config lacks.
printf 'CONFIG_SEED=3\n' >"$KCONFIG_CONFIG"
$K listnewconfig | grep -q '^CONFIG_BATCH_SIZE=' && ok || bad "listnewconfig misses BATCH_SIZE"

# 50 fixed-seed randconfigs: each accepted by knlp, each reproducible.
for s in $(seq 1 50); do
	KCONFIG_SEED=$s $K randconfig >/dev/null || { bad "randconfig $s"; continue; }
	cp "$KCONFIG_CONFIG" "$T/r1"
	$K randconfig "$s" >/dev/null
	cmp -s "$KCONFIG_CONFIG" "$T/r1" && ok || bad "randconfig $s is not reproducible"
	"$KNLP" config show --config "$KCONFIG_CONFIG" >/dev/null 2>"$T/err" && ok || bad "randconfig $s rejected: $(cat "$T/err")"
done
# Different seeds give different configurations.
$K randconfig 1 >/dev/null; cp "$KCONFIG_CONFIG" "$T/a"; $K randconfig 2 >/dev/null
cmp -s "$KCONFIG_CONFIG" "$T/a" && bad "randconfig ignores the seed" || ok
finish
