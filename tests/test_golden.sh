#!/bin/bash
# Behaviour kept bit for bit across refactors: the quickstart preset of each model family
# (gpt2-tiny-cpu for 200 iterations; lenet5-fashion-adamw for one epoch on a Fashion-MNIST subset;
# gnn-synthetic on a small graph for two epochs) must log the same losses and evaluation
# figures and end with the same tensors as tests/golden/refactor.json, which the trainers
# wrote before the single training loop replaced them.
#
# The runs use one thread and libtorch's AVX2 kernels (oneDNN, ATen and OpenBLAS each pick
# kernels per instruction set), so an AVX-512 host and an AVX2 one give the same numbers.
# `tests/test_golden.sh build/knlp --update` rewrites the file (only when a change of the
# numbers is intended; say why in the commit).
. "$(dirname "$0")/lib.sh"
UPDATE=${2:-}
GOLDEN=$TOP/tests/golden/refactor.json
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell KNLP_PEAK_FLOPS=1e9
cd "$T"
preset() { KCONFIG_CONFIG="$T/$1.config" $PYTHON "$TOP/scripts/kconfig.py" defconfig "$1" >/dev/null || bad "defconfig $1"; }

# A deterministic byte corpus: words from a fixed list, chosen by a 64-bit LCG.
$PYTHON - <<'PY'
words = ("the kernel driver maps a page into memory while the scheduler wakes each task and "
         "a module frees its buffer after the lock is released so that interrupts reach the "
         "device queue before the next request").split()
x, out = 12345, []
for i in range(80000):
    x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    out.append(words[(x >> 33) % len(words)])
    if (x >> 20) % 13 == 0:
        out.append(".\n")
open("corpus.txt", "w").write(" ".join(out))
PY
"$KNLP" prepare --corpus corpus.txt --out lm >/dev/null 2>&1 || bad "prepare"

# The first 2048 training and 512 test images of Debian's Fashion-MNIST.
$PYTHON - <<'PY'
import gzip, os, struct
src, dst = "/usr/share/datasets/fashion-mnist", "fm"
os.makedirs(dst)
for split, n in (("train", 2048), ("t10k", 512)):
    img = gzip.open(f"{src}/{split}-images-idx3-ubyte.gz").read()
    lab = gzip.open(f"{src}/{split}-labels-idx1-ubyte.gz").read()
    with gzip.open(f"{dst}/{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + img[16:16 + n * 784])
    with gzip.open(f"{dst}/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + lab[8:8 + n])
PY

preset gpt2-tiny-cpu
preset lenet5-fashion-adamw
preset gnn-synthetic
common="--set NUM_THREADS=1 --set HW_MONITOR=n"
run() { # family run-folder knlp-train-arguments...
	local fam=$1 out=$2; shift 2
	"$KNLP" train "$@" $common --out "$out" >"$out.log" 2>&1 || { bad "$fam run: $(tail -3 "$out.log")"; return; }
	$PYTHON "$TOP/tests/golden/extract.py" "$fam" "$out" >"$out.json" || bad "$fam extract"
}
# The fused CPU kernels (models/fused.h) round differently from the libtorch operators the
# golden run used; tests/test_fused.cpp checks them against those operators.
run gpt2 lm_run --config gpt2-tiny-cpu.config --set DATA_DIR="\"$T/lm\"" --set MAX_ITERS=200 --set EVAL_INTERVAL=100 \
	--set EVAL_SAMPLES=4 --set LOG_INTERVAL=10 --set GPT2_BLOCKED_ATTENTION=n --set GPT2_FUSED_LAYERNORM=n \
	--set GPT2_FUSED_BIAS_GELU=n
run image img_run --config lenet5-fashion-adamw.config --set IMAGE_DATA_DIR="\"$T/fm\"" --set EPOCHS=1 --set BATCH_SIZE=128 --set LOG_INTERVAL=2
run gnn gnn_run --config gnn-synthetic.config --set GNN_SYNTH_NODES=20000 --set GNN_EPOCHS=2 --set LOG_INTERVAL=5

$PYTHON - "$GOLDEN" "$UPDATE" <<'PY' && ok || bad "the runs differ from tests/golden/refactor.json"
import json, sys
golden, update = sys.argv[1], sys.argv[2] == "--update"
got = {f: json.load(open(r + ".json")) for f, r in (("gpt2", "lm_run"), ("image", "img_run"), ("gnn", "gnn_run"))}
if update:
    with open(golden, "w") as f:  # one record per line: reviewable diffs
        f.write("{\n" + ",\n".join(
            f' "{fam}": {{\n' + ",\n".join(f'  "{k}": ' + (json.dumps(v) if not isinstance(v, list) else
                "[\n   " + ",\n   ".join(json.dumps(x) for x in v) + "\n  ]") for k, v in rec.items()) + "\n }"
            for fam, rec in got.items()) + "\n}\n")
    print("wrote", golden)
    sys.exit(0)
want = json.load(open(golden))
ok = True
for fam in want:
    w, g = want[fam], got.get(fam, {})
    for part in ("train", "eval", "tensors", "sha256"):
        if w[part] != g.get(part):
            ok = False
            if isinstance(w[part], list):
                diff = [(a, b) for a, b in zip(w[part], g.get(part, [])) if a != b]
                print(f"{fam} {part}: {len(w[part])} vs {len(g.get(part, []))} records; first differences {diff[:3]}")
            else:
                print(f"{fam} {part}: want {w[part]}, got {g.get(part)}")
# The premise: each family logged and evaluated something (an empty golden proves nothing).
for fam, w in want.items():
    if len(w["train"]) < 2 or len(w["eval"]) < 1 or w["tensors"] < 4:
        ok = False
        print(f"{fam}: golden record too small to prove anything: {w}")
sys.exit(0 if ok else 1)
PY
finish
