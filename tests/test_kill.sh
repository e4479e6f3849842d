#!/bin/bash
# SIGKILL campaigns: `knlp prepare` (GPT-2 BPE, ~4 MB of text) and `knlp export --format
# gguf` (a 28 MB file) killed at four moments spread over their uninterrupted run time. After
# every kill each output under its final name is either absent or byte-identical to the
# uninterrupted run's (writes are temp + fsync + rename), a training run on the half-written
# folder refuses it naming the unfinished preparation, and running the command again gives
# the identical result with no temporary files left behind.
. "$(dirname "$0")/lib.sh"
cd "$T"
$PYTHON - <<'PY'
import random
random.seed(7)
words = ("the driver maps a page and the scheduler wakes every task while this patch locks "
         "memory for a module that frees its buffer under the kernel lock").split()
open("corpus.txt", "w").write(" ".join(random.choice(words) + random.choice(["", ",", ".", "s", "ed"])
                                       for _ in range(700000)))
PY
prep() { "$KNLP" prepare --corpus corpus.txt --tokenizer gpt2 --vocab-dir "$TOP/datasets/gpt2" --out "$1"; }
# moments D: four points in (0, D) seconds, D the uninterrupted run time
moments() { $PYTHON -c "import sys; d = float(sys.argv[1]); print(' '.join('%.2f' % (d * f) for f in (0.2, 0.4, 0.6, 0.8)))" "$1"; }
elapsed() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; $PYTHON -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$s" "$(date +%s.%N)"; return $rc; }
# same_or_absent REF DIR FILES...: each file absent from DIR or identical to REF's
same_or_absent() {
	local ref=$1 dir=$2; shift 2
	for f in "$@"; do
		[ -e "$dir/$f" ] || continue
		cmp -s "$ref/$f" "$dir/$f" || { echo "$dir/$f differs from the uninterrupted run's"; return 1; }
	done
}
# kill_after SECONDS CMD...: run CMD, SIGKILL it after SECONDS and reap it (true if it was
# still running then; a process reaped by this shell is gone before the next command).
kill_after() {
	local s=$1; shift
	"$@" >/dev/null 2>&1 &
	local pid=$!
	sleep "$s"
	local was=1
	kill -0 $pid 2>/dev/null && kill -9 $pid 2>/dev/null && was=0
	wait $pid 2>/dev/null
	return $was
}
no_temps() { ! ls -a "$1" | grep -q '\.tmp\.'; }

d=$(elapsed prep ref) || { bad "prepare: $(prep ref 2>&1 | tail -2)"; finish; exit 1; }
killed=0
for m in $(moments "$d"); do
	rm -rf k
	kill_after "$m" "$KNLP" prepare --corpus corpus.txt --tokenizer gpt2 --vocab-dir "$TOP/datasets/gpt2" --out k &&
		killed=$((killed + 1))
	msg=$(same_or_absent ref k train.bin val.bin meta.json) || { bad "prepare killed at $m s: $msg"; continue; }
	if [ -d k ] && [ ! -e k/meta.json ]; then
		printf 'CONFIG_DATA_DIR="%s/k"\nCONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=1\nCONFIG_GPT2_N_EMBD=32\nCONFIG_GPT2_N_HEAD=2\n' "$T" >k.config
		out=$("$KNLP" train --config k.config --out kr 2>&1) && bad "trained on a half-prepared folder (killed at $m s)"
		case "$out" in *"$T/k"*) ;; *) bad "training on a half-prepared folder (killed at $m s) does not name it: $out" ;; esac
	fi
	prep k >/dev/null 2>&1 || bad "prepare again after the kill at $m s"
	same_or_absent ref k train.bin val.bin meta.json >/dev/null && [ -e k/meta.json ] && no_temps k && ok ||
		bad "prepare again after the kill at $m s: $(ls -a k | tr '\n' ' ')"
done
# Most of the four must land while the command runs (it can finish early on a fast day).
[ $killed -ge 3 ] && ok || bad "only $killed of 4 prepare runs were killed (run time $d s)"

# What a preparation killed mid-way leaves (its temporary token stream, no meta.json) is
# refused by name.
mkdir half && : >half/all.bin.tmp.1
printf 'CONFIG_DATA_DIR="%s/half"\nCONFIG_GPT2_SIZE_CUSTOM=y\nCONFIG_GPT2_N_LAYER=1\nCONFIG_GPT2_N_EMBD=32\nCONFIG_GPT2_N_HEAD=2\n' "$T" >h.config
expect_fail "(all.bin.tmp.1 but no meta.json); run the preparation again" "$KNLP" train --config h.config --out hr

# GGUF export.
cat >g.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_DATA_DIR="$T/ref"
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=2
CONFIG_GPT2_N_HEAD=4
CONFIG_GPT2_N_EMBD=256
CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_BATCH_SIZE=2
CONFIG_MAX_ITERS=1
CONFIG_EVAL_INTERVAL=1
CONFIG_EVAL_SAMPLES=1
# CONFIG_SAMPLE_AT_EVAL is not set
EOC
KNLP_PEAK_FLOPS=1e9 "$KNLP" train --config g.config --out run >run.log 2>&1 || { bad "train: $(tail -3 run.log)"; finish; exit 1; }
mkdir -p gref gk
exp() { "$KNLP" export --checkpoint run --format gguf --out "$1"; }
d=$(elapsed exp gref/model.gguf) || { bad "export: $(exp gref/model.gguf 2>&1 | tail -2)"; finish; exit 1; }
killed=0
for m in $(moments "$d"); do
	rm -f gk/*
	kill_after "$m" "$KNLP" export --checkpoint run --format gguf --out gk/model.gguf && killed=$((killed + 1))
	msg=$(same_or_absent gref gk model.gguf model.gguf.plan.json) || { bad "export killed at $m s: $msg"; continue; }
	exp gk/model.gguf >/dev/null 2>&1 || bad "export again after the kill at $m s"
	cmp -s gref/model.gguf gk/model.gguf && no_temps gk && ok || bad "export again after the kill at $m s: $(ls -a gk | tr '\n' ' ')"
done
[ $killed -ge 3 ] && ok || bad "only $killed of 4 exports were killed (run time $d s)"
finish
