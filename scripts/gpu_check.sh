#!/bin/bash
# The GPU check (docs/performance.md, "GPU"), for a lent CUDA machine that has PyTorch's
# CUDA libtorch, nvcc, cmake and ninja but none of knlp's other build dependencies. Run
# scripts/gpu_prepare.sh here first: it puts those (Debian packages, unpacked), a slice of
# the default corpora and the run configurations in .gpu/. Then, on the GPU machine, from
# the repository root with .gpu and datasets/gpt2 carried along:
#
#   bash scripts/gpu_check.sh [OUTDIR]
#
# It builds knlp against the machine's libtorch (C++20, CUDA), runs the CUDA tests, the
# 124M bf16 speed run (context 1024, 30 iterations) next to plain eager PyTorch on the same
# GPU, the optimizer step on the GPU, a pruned run killed and resumed on the GPU, sampling,
# evaluation, and the Hugging Face export evaluated by transformers. Everything is logged
# to OUTDIR/log.txt; the last lines are a summary.
set -u
OUT=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
t0=$(date +%s)
ts() { echo "=== [$(($(date +%s) - t0)) s] $*"; }
summary=()
say() { summary+=("$*"); echo "SUMMARY: $*"; }

ts "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
g++ --version | head -1
cmake --version | head -1
nproc

R=$top/.gpu/root/usr
[ -d "$R" ] || { echo "gpu_check: $R missing: run scripts/gpu_prepare.sh first"; exit 1; }
export PYTHONPATH=$R/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$R/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
B=$top/build-cuda

ts "configure"
conf() {
	cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKNLP_CXX_STANDARD=20 \
		-DCMAKE_PREFIX_PATH="$TP;$R" -DDEBIAN_PYTHON="$(command -v python3)" \
		-DZLIB_INCLUDE_DIR="$R/include" -DZLIB_LIBRARY="$R/lib/x86_64-linux-gnu/libz.a" \
		-DCMAKE_EXE_LINKER_FLAGS=-Wl,--no-as-needed "$@" >>"$OUT/cmake.txt" 2>&1
}
conf
rc=$?
if [ $rc -ne 0 ]; then
	# TorchConfig.cmake's CUDA checks failed: use the torch folder's headers and libraries.
	tail -n 25 "$OUT/cmake.txt"
	rm -rf "$B"
	conf -DKNLP_TORCH_ROOT="$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
	rc=$?
	say "TorchConfig.cmake failed; configured with KNLP_TORCH_ROOT (rc $rc)"
fi
tail -n 8 "$OUT/cmake.txt"
if [ $rc -ne 0 ]; then
	say "configure FAILED"
	exit 1
fi
ts "build"
ninja -C "$B" -k 0 knlp test_cuda knlp_bench >"$OUT/build.txt" 2>&1
rc=$?
grep -E "error|FAILED" "$OUT/build.txt" | head -n 40
tail -n 3 "$OUT/build.txt"
if [ $rc -ne 0 ]; then
	say "build FAILED"
	exit 1
fi
K=$B/knlp
ts "built"

ts "CUDA tests"
timeout 240 "$B/test_cuda" --gtest_output=json:"$OUT/test_cuda.json" 2>&1 | grep -vE "^\[ +(RUN|OK) " | tail -n 40
say "test_cuda: $(python3 -c "import json; j=json.load(open('$OUT/test_cuda.json')); print(j['tests'], 'tests,', j['failures'], 'failures')" 2>&1)"

ts "124M, context 1024, batch 12, bf16: plain eager PyTorch"
eager=$(timeout 180 python3 scripts/ref/gpt2_eager.py 12 12 768 1024 12 50304 30 cuda bf16 | tail -n 1)
echo "$eager"

ts "124M, context 1024, batch 12, bf16: knlp train (30 iterations)"
rm -rf /tmp/r124
KNLP_PEAK_FLOPS=989e12 timeout 300 "$K" train --config .gpu/c124.config --out /tmp/r124 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 25
cp /tmp/r124/metrics.jsonl "$OUT/metrics_124m.jsonl" 2>/dev/null
python3 - "$eager" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open("/tmp/r124/metrics.jsonl") if '"tokens_per_sec"' in l]
eager = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
steady = [r for r in rows if r.get("iter", r.get("iteration", 0)) > 10]
tok = max(r["tokens_per_sec"] for r in steady) if steady else 0
med = sorted(r["tokens_per_sec"] for r in steady)[len(steady) // 2] if steady else 0
fpt = 6 * 124475904 + 12 * 12 * 768 * 1024
line = (f"124M bf16 T1024 B12: knlp {med:.0f} tok/s (best window {tok:.0f}), MFU {100 * med * fpt / 989e12:.1f}% of 989 TFLOP/s; "
        f"eager PyTorch {eager.get('tokens_per_sec', 0):.0f} tok/s, MFU {100 * eager.get('tokens_per_sec', 0) * fpt / 989e12:.1f}%; "
        f"ratio {med / eager['tokens_per_sec'] if eager.get('tokens_per_sec') else float('nan'):.2f}x")
print("SUMMARY:", line)
open("/tmp/summary_124m", "w").write(line)
EOF
say "$(cat /tmp/summary_124m 2>/dev/null || echo '124M run FAILED')"

ts "optimizer step on the GPU, 124M parameter set"
ob=$(timeout 120 "$B/knlp_bench" optim 20 cuda | tail -n 1)
echo "$ob"
say "optim on cuda: $ob"

ts "pruned tiny run on the GPU (AdamWPrune bitter7, 50%), killed at step 130 and resumed"
for d in /tmp/ta /tmp/tb; do rm -rf $d; done
export KNLP_PEAK_FLOPS=989e12
timeout 120 "$K" train --config .gpu/tiny-prune.config --out /tmp/ta --set MAX_ITERS=200 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 8
KNLP_FAULT_KILL_AT=after_step#130 timeout 120 "$K" train --config .gpu/tiny-prune.config --out /tmp/tb --set MAX_ITERS=200 >/dev/null 2>&1
echo "killed run exit $?"
timeout 120 "$K" train --config .gpu/tiny-prune.config --set MAX_ITERS=200 --resume /tmp/tb 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 3
cp /tmp/ta/training_metrics.json "$OUT/tiny_training_metrics.json" 2>/dev/null
python3 - <<'EOF'
import hashlib, json
def h(p):
    try:
        return hashlib.sha256(open(p, "rb").read()).hexdigest()[:16]
    except OSError:
        return "missing"
a = json.load(open("/tmp/ta/training_metrics.json"))
p = a.get("pruning", {})
def losses(r):
    return [json.loads(l).get("loss") for l in open(r + "/metrics.jsonl") if '"loss"' in l]
la, lb = losses("/tmp/ta"), losses("/tmp/tb")
same_w = h("/tmp/ta/checkpoints/iter_00000200/model.safetensors") == h("/tmp/tb/checkpoints/iter_00000200/model.safetensors")
same_o = h("/tmp/ta/checkpoints/iter_00000200/optimizer.safetensors") == h("/tmp/tb/checkpoints/iter_00000200/optimizer.safetensors")
maxd = max((abs(x - y) for x, y in zip(la, lb) if x is not None and y is not None), default=float("nan"))
print("SUMMARY: tiny bitter7 on cuda: final sparsity %.4f (target %s), best val loss %.4f; resumed vs uninterrupted: weights %s, optimizer %s, logged losses max diff %.3g over %d/%d"
      % (p.get("final_sparsity", -1), p.get("target_sparsity"), a.get("best_val_loss", -1), "identical" if same_w else "DIFFER",
         "identical" if same_o else "DIFFER", maxd, len(la), len(lb)))
EOF

ts "sample and eval on the GPU"
"$K" sample --checkpoint /tmp/ta --prompt "The kernel" --tokens 80 --seed 1 2>&1 | tail -n 6
"$K" eval --checkpoint /tmp/ta 2>&1 | tail -n 1

ts "export the 124M run to Hugging Face and evaluate with transformers"
rm -rf /tmp/hf124
"$K" export --checkpoint /tmp/r124 --format hf --out /tmp/hf124 2>&1 | tail -n 2
ke=$("$K" eval --checkpoint /tmp/r124 --data .gpu/data/gpt2 --batch 16 2>/dev/null | tail -n 1)
he=$(timeout 120 python3 scripts/ref/hf_eval.py /tmp/hf124 .gpu/data/gpt2/val.bin cuda 2>/dev/null | tail -n 1)
echo "knlp: $ke"
echo "transformers: $he"
say "$(python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f\"val loss knlp {a['val_loss']:.6f} vs transformers {b['val_loss']:.6f} over {a['tokens']} tokens (diff {abs(a['val_loss']-b['val_loss']):.2e})\")" "$ke" "$he" 2>&1 | tail -n 1)"

ts "done"
echo
for s in "${summary[@]}"; do echo "SUMMARY: $s"; done
