#!/bin/bash
# Bad input at the command line: one clear line naming the file and the problem, exit 1.
. "$(dirname "$0")/lib.sh"
cd "$T"
expect_fail ".config: cannot read configuration" "$KNLP" config show
expect_fail "make list-defconfigs" "$KNLP" config show
printf 'CONFIG_SEED=1\nGARBAGE\n' >bad.config
expect_fail "bad.config:2: malformed line" "$KNLP" config show --config bad.config
printf 'CONFIG_FOO=1\n' >bad.config
expect_fail "bad.config:1: unknown symbol CONFIG_FOO" "$KNLP" config show --config bad.config
printf 'CONFIG_BATCH_SIZE=lots\n' >bad.config
expect_fail "bad.config:1: CONFIG_BATCH_SIZE expects an integer, got 'lots'" "$KNLP" config show --config bad.config
printf 'CONFIG_SEED=1\n' >ok.config
expect_fail "--set: unknown symbol CONFIG_NOPE" "$KNLP" config show --config ok.config --set NOPE=1
"$KNLP" config show --config ok.config --set MAX_TIME=600 | grep -q '^CONFIG_MAX_TIME=600$' && ok || bad "--set ignored"
expect_fail "$T/nowhere: corpus path does not exist" "$KNLP" prepare --corpus "$T/nowhere" --out out
mkdir -p empty && echo x >empty/a.bin
expect_fail "holds no text files" "$KNLP" prepare --corpus empty --out out
mkdir -p gz && head -c 100000 /dev/urandom | gzip -c | head -c 5000 >gz/x.txt.gz
expect_fail "x.txt.gz: corrupt or truncated gzip data" "$KNLP" prepare --corpus gz --out out
test ! -e out/meta.json && ok || bad "meta.json left after a failed prepare"
printf "text\n" >one.txt
expect_fail "GPT-2 vocabulary missing" "$KNLP" prepare --corpus one.txt --tokenizer gpt2 --vocab-dir "$T" --out out
# KNLP_PROFILE: malformed steps refused; where libtorch has no Kineto (Debian's) the
# profile is refused before any training, elsewhere the trace is written.
cycle_data pdata >/dev/null 2>&1
printf 'CONFIG_DATA_DIR="%s/pdata"\nCONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=1\nCONFIG_GPT2_N_EMBD=32\nCONFIG_GPT2_N_HEAD=2\nCONFIG_BATCH_SIZE=2\nCONFIG_GPT2_BLOCK_SIZE=16\nCONFIG_MAX_ITERS=3\nCONFIG_EVAL_INTERVAL=100\nCONFIG_EVAL_SAMPLES=1\n# CONFIG_SAMPLE_AT_EVAL is not set\n' "$T" >p.config
KNLP_PROFILE=p.json KNLP_PROFILE_STEPS=3 expect_fail "KNLP_PROFILE_STEPS=3: expected FIRST:LAST iterations" "$KNLP" train --config p.config --out pr0
if out=$(KNLP_PEAK_FLOPS=1e9 KNLP_PROFILE=p.json KNLP_PROFILE_STEPS=2:3 "$KNLP" train --config p.config --out pr 2>&1); then
	$PYTHON -c "import json; t = json.load(open('p.json')); assert any(e.get('cat') == 'cpu_op' for e in t['traceEvents'])" && ok ||
		bad "KNLP_PROFILE: no operators in the trace"
else
	case "$out" in *"KNLP_PROFILE=p.json: this libtorch cannot write a profile"*) ok ;; *) bad "KNLP_PROFILE: $out" ;; esac
	test ! -e pr/checkpoints && ok || bad "KNLP_PROFILE refused after training had started"
fi
# Every error is a single line.
n=$("$KNLP" config show --config bad.config 2>&1 | wc -l)
[ "$n" -eq 1 ] && ok || bad "error spans $n lines"
"$KNLP" version | grep -q '^knlp ' && ok || bad "version"
"$KNLP" --help | grep -q 'prepare' && ok || bad "--help lists sub-commands"
finish
