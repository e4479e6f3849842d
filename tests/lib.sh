# Shared helpers for the shell tests (sourced, not run: CMake only runs test_*.sh).
set -u
KNLP=${1:-build/knlp}
# Tests pin the CPU's precision: CONFIG_CPU_PRECISION_AUTO picks bf16 on CPUs with native bf16,
# and the tests' numbers are fp32's (tests/test_precision.sh sets it per run).
export KNLP_CPU_PRECISION=${KNLP_CPU_PRECISION:-fp32}
case "$KNLP" in /*) ;; *) KNLP="$PWD/$KNLP" ;; esac
PYTHON=/usr/bin/python3
# glibc keeps freed memory for reuse (the values knlp sets with mallopt): without it every large
# tensor of the Python references is a fresh mmap, and page faults on these VMs cost seconds
# per reference run (llama_eager.py over a 151k vocabulary: 12.5 s against 2.1 s).
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_MAX_=0
TOP=$PWD
T=$(mktemp -d /tmp/knlp-sh-XXXXXX)
trap '[ -n "${KEEP_T:-}" ] || rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect_fail "substring" cmd...: the command must exit non-zero and print the substring on one line
expect_fail() {
	want=$1; shift
	out=$("$@" 2>&1); rc=$?
	if [ $rc -eq 0 ]; then bad "expected failure: $* (output: $out)"; return; fi
	if ! printf '%s\n' "$out" | grep -qF -- "$want"; then bad "missing '$want' from: $*: $out"; return; fi
	ok
}
# cycle_data DIR: a byte-level token folder of a fixed cycle of four sentences (every
# continuation is predictable from 32 bytes of context), prepared by knlp in the cwd.
cycle_data() {
	$PYTHON - <<'PY'
s = " ".join(["the driver maps the page.", "a module frees a buffer.", "this patch locks memory.",
              "the scheduler wakes a task."] * 1000)
open("corpus.txt", "w").write(s)
PY
	"$KNLP" prepare --corpus corpus.txt --out "$1" >/dev/null 2>&1
}
# tiny_gpt2 FILE DATA_DIR [CONFIG_LINE...]: a .config of a seconds-long CPU GPT-2 (2 layers,
# width 64, context 32, 20 steps, evaluations at 0, 10 and 20, every step logged) on DATA_DIR,
# then the extra lines.
tiny_gpt2() {
	local f=$1 data=$2; shift 2
	printf '%s\n' CONFIG_DEVICE_CPU=y CONFIG_GPT2_SIZE_CUSTOM=y CONFIG_GPT2_N_LAYER=2 CONFIG_GPT2_N_EMBD=64 \
		CONFIG_GPT2_N_HEAD=2 CONFIG_GPT2_BLOCK_SIZE=32 CONFIG_BATCH_SIZE=4 CONFIG_MAX_ITERS=20 CONFIG_WARMUP_ITERS=5 \
		CONFIG_EVAL_INTERVAL=10 CONFIG_EVAL_SAMPLES=2 CONFIG_LOG_INTERVAL=1 CONFIG_SAMPLE_TOKENS=8 \
		"CONFIG_DATA_DIR=\"$data\"" "$@" >"$f"
}
# bar_idx DIR NTRAIN NTEST: a synthetic MNIST-format dataset (gzip'd IDX, 28x28, 10
# classes): class k is a bright horizontal bar at row 2k+4 over noise.
bar_idx() {
	$PYTHON - "$@" <<'PY'
import gzip, os, random, struct, sys
d, ntrain, ntest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(3)
def make(n, prefix):
    imgs, labels = bytearray(), bytearray()
    for i in range(n):
        k = r.randrange(10)
        px = [r.randrange(60) for _ in range(28 * 28)]
        for x in range(4, 24):
            px[(2 * k + 4) * 28 + x] = 200 + r.randrange(55)
        imgs += bytes(px); labels.append(k)
    with gzip.open(f"{d}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + imgs)
    with gzip.open(f"{d}/{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels)
os.makedirs(d, exist_ok=True)
make(ntrain, "train"); make(ntest, "t10k")
PY
}
# killed_run DIR CMD...: run CMD (its output to DIR.log), which a fault hook kills with
# SIGKILL; the premise of a kill-and-resume check is verified: the run was killed (exit
# 137) before its end (no FINAL pointer, metrics not complete).
killed_run() {
	local dir=$1; shift
	("$@" >"$dir.log" 2>&1) 2>/dev/null
	local rc=$?
	if [ $rc -eq 137 ] && [ ! -e "$dir/checkpoints/FINAL" ] && ! grep -q '"status": "complete"' "$dir/training_metrics.json" 2>/dev/null; then
		ok
	else
		bad "premise: $dir was not killed before its end (exit $rc; $(ls "$dir/checkpoints" 2>&1 | tr '\n' ' '))"
	fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ $fail -eq 0 ]
}
