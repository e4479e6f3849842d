#!/bin/bash
# The Kconfig workflow: help text, preset round trips, fragments, randconfig, listnewconfig.
. "$(dirname "$0")/lib.sh"
K="$PYTHON $TOP/scripts/kconfig.py"
export KCONFIG_CONFIG=$T/.config

$K helpcheck >/dev/null && ok || bad "helpcheck: symbols without help"

# Each preset survives defconfig -> olddefconfig -> savedefconfig unchanged (as a set of lines).
# One kconfiglib process does every preset (`roundtrip`); the command-line path is checked
# against it on one preset.
mkdir -p "$T/rt"
$K roundtrip "$T/rt" >/dev/null || bad "roundtrip"
for p in $(ls "$TOP/defconfigs"); do
	if diff <(grep '^CONFIG_\|^# CONFIG_' "$TOP/defconfigs/$p" | sort) <(grep '^CONFIG_\|^# CONFIG_' "$T/rt/$p.min" | sort) >"$T/d"; then
		ok
	else
		bad "preset $p does not round-trip:"; cat "$T/d"
	fi
done
# Presets named like the original's resolve to the original's settings
# (tests/golden/original_presets.txt), and every such preset is listed there.
if $PYTHON - "$TOP/tests/golden/original_presets.txt" "$TOP/defconfigs" "$T/rt" >"$T/orig" 2>&1 <<'PY'; then ok; else bad "original-named presets: $(cat "$T/orig")"; fi
import os, re, sys
golden, presets, rt = sys.argv[1:4]
names, want = set(), {}
for line in open(golden):
    if not line.strip() or line.startswith("#"):
        continue
    head, rest = line.split(None, 1)
    if head == "original-names":
        names.update(rest.split())
    else:
        want[head] = re.findall(r'(\w+)=("[^"]*"|\S+)', rest)
errors = []
ours = set(os.listdir(presets))
for p in sorted(ours & names):
    if p not in want:
        errors.append(f"{p} shares a name with the original's preset but has no line in the golden file")
for p, kvs in sorted(want.items()):
    if p not in ours:
        errors.append(f"{p}: listed but not in defconfigs/")
        continue
    cfg = {}
    for l in open(os.path.join(rt, p + ".config")):
        l = l.strip()
        if l.startswith("CONFIG_") and "=" in l:
            k, v = l[7:].split("=", 1)
            cfg[k] = v
        elif l.startswith("# CONFIG_") and l.endswith(" is not set"):
            cfg[l[9:-11]] = "n"
    for k, v in kvs:
        got = cfg.get(k, "n")
        if got != v:
            errors.append(f"{p}: CONFIG_{k} is {got}, the original's is {v}")
print("; ".join(errors))
sys.exit(1 if errors else 0)
PY
# knlp accepts every preset (one process checks them all: libtorch loads once).
"$KNLP" config check "$T"/rt/*.config >"$T/check" 2>&1 && [ "$(grep -c ': ok$' "$T/check")" -eq "$(ls "$TOP/defconfigs" | wc -l)" ] &&
	ok || bad "knlp rejects a preset: $(grep -v ': ok$' "$T/check")"
$K defconfig gpt2-tiny-cpu >/dev/null 2>&1 && $K olddefconfig >/dev/null && $K savedefconfig "$T/min" >/dev/null || bad "defconfig path"
cmp -s "$KCONFIG_CONFIG" "$T/rt/gpt2-tiny-cpu.config" && cmp -s "$T/min" "$T/rt/gpt2-tiny-cpu.min" && ok ||
	bad "the command-line defconfig path differs from roundtrip"

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

# 50 fixed-seed randconfigs: each accepted by knlp, each reproducible (two batches agree, and
# the command-line randconfig gives the batch's file).
mkdir -p "$T/ra" "$T/rb"
$K randconfigs "$T/ra" 1 50 && $K randconfigs "$T/rb" 1 50 || bad "randconfigs"
for s in $(seq 1 50); do
	cmp -s "$T/ra/rand-$s" "$T/rb/rand-$s" && ok || bad "randconfig $s is not reproducible"
done
"$KNLP" config check "$T"/ra/rand-* >"$T/check" 2>&1 && [ "$(grep -c ': ok$' "$T/check")" -eq 50 ] && ok ||
	bad "knlp rejects a randconfig: $(grep -v ': ok$' "$T/check")"
printf 'CONFIG_SEED=x\n' >"$T/badseed"
expect_fail "badseed:1:" "$KNLP" config check "$T/ra/rand-1" "$T/badseed"
KCONFIG_SEED=7 $K randconfig >/dev/null && cmp -s "$KCONFIG_CONFIG" "$T/ra/rand-7" && ok || bad "randconfig 7 differs from the batch"
# Different seeds give different configurations.
$K randconfig 1 >/dev/null; cp "$KCONFIG_CONFIG" "$T/a"; $K randconfig 2 >/dev/null
cmp -s "$KCONFIG_CONFIG" "$T/a" && bad "randconfig ignores the seed" || ok
finish
