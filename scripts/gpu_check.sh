#!/bin/bash
# The GPU check (docs/performance.md, "GPU"), for a lent CUDA machine that has PyTorch's
# CUDA libtorch, nvcc, cmake and ninja but none of knlp's other build dependencies. Run
# scripts/gpu_prepare.sh here first: it puts those (Debian packages, unpacked), a slice of
# the default corpora and the run configurations in .gpu/. Then, on the GPU machine, from
# the repository root with .gpu and datasets/gpt2 carried along:
#
#   bash scripts/gpu_check.sh [OUTDIR]
#
# GPU_CHECK_STAGES (comma-separated, default all) picks what runs after the build:
# tests, ddp, speed, profile, tier, optim, prune, export, hfllama. Each stage has its own
# time limit.
# GPU_CHECK_SKIP_BUILD=1 reuses the build in GPU_CHECK_BUILD (default build-cuda) as it is.
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

STAGES=,${GPU_CHECK_STAGES:-tests,ddp,speed,profile,tier,optim,prune,export,hfllama},
want() { case $STAGES in *,$1,*) return 0 ;; esac; return 1; }
R=$top/.gpu/root/usr
[ -d "$R" ] || { echo "gpu_check: $R missing: run scripts/gpu_prepare.sh first"; exit 1; }
export PYTHONPATH=$R/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$R/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
B=${GPU_CHECK_BUILD:-$top/build-cuda}

# nccl.h: a pip torch keeps it in site-packages/nvidia/.../include.
NCCL_H=$( (find "$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia" /usr/local/cuda/include \
	/usr/include -maxdepth 4 -name nccl.h 2>/dev/null) | head -n 1)
NCCL_INC=${NCCL_H:+$(dirname "$NCCL_H")}
echo "nccl.h in: ${NCCL_INC:-not found}"
ls "$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')/include" | tr '\n' ' '
echo
if [ -z "${GPU_CHECK_SKIP_BUILD:-}" ]; then # GPU_CHECK_SKIP_BUILD=1: use the build in $B as it is
ts "configure"
conf() {
	cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKNLP_CXX_STANDARD=20 \
		-DCMAKE_PREFIX_PATH="$TP;$R" -DDEBIAN_PYTHON="$(command -v python3)" \
		-DZLIB_INCLUDE_DIR="$R/include" -DZLIB_LIBRARY="$R/lib/x86_64-linux-gnu/libz.a" \
		${NCCL_INC:+-DKNLP_NCCL_INCLUDE_DIR="$NCCL_INC"} \
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
grep -E "c10d|Gloo|NCCL|nccl" "$OUT/cmake.txt" | tail -n 6
tail -n 4 "$OUT/cmake.txt"
if [ $rc -ne 0 ]; then
	say "configure FAILED"
	exit 1
fi
say "$(grep -o 'c10d process groups: .*' "$OUT/cmake.txt" | tail -n 1)"
ts "build"
ninja -C "$B" -k 0 knlp test_cuda knlp_bench >"$OUT/build.txt" 2>&1
rc=$?
grep -E "error|FAILED" "$OUT/build.txt" | head -n 40
tail -n 3 "$OUT/build.txt"
if [ $rc -ne 0 ]; then
	# The optional parts (c10d process groups, the profiler) off, and try again.
	say "build FAILED; rebuilding without c10d and the profiler"
	conf -DKNLP_C10D=OFF -DKNLP_PROFILER=OFF
	ninja -C "$B" -k 0 knlp test_cuda knlp_bench >"$OUT/build2.txt" 2>&1 || {
		grep -E "error|FAILED" "$OUT/build2.txt" | head -n 40
		say "build FAILED again"
		exit 1
	}
fi
fi
K=$B/knlp
ts "built"

if want tests; then
	ts "CUDA tests"
	timeout 240 "$B/test_cuda" --gtest_output=json:"$OUT/test_cuda.json" >/tmp/test_cuda.txt 2>&1
	rc=$?
	grep -vE "^\[ +OK " /tmp/test_cuda.txt | tail -n 40
	echo "test_cuda exit $rc"
	if [ $rc -ne 0 ] && command -v cuda-gdb >/dev/null; then # a crash: where
		timeout 120 cuda-gdb -batch -ex run -ex bt --args "$B/test_cuda" 2>&1 | grep -vE "^\[(New|Thread)" | tail -n 30
	fi
	say "test_cuda: $(python3 -c "import json; j=json.load(open('$OUT/test_cuda.json')); print(j['tests'], 'tests,', j['failures'], 'failures,', sum(t.get('result') == 'SKIPPED' or t.get('status') == 'NOTRUN' for s in j['testsuites'] for t in s['testsuite']), 'skipped')" 2>&1 | tail -n 1)"
fi

FPT=$((6 * 124475904 + 12 * 12 * 768 * 1024))
export KNLP_PEAK_FLOPS=989e12
# "median best windows" tokens/s of the steady log windows (after iteration 10) of a knlp run.
steady() {
	python3 - "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"train"' in l]
s = sorted(r["throughput"] for r in rows if r["step"] > 10)
print(json.dumps({"median": s[len(s) // 2] if s else 0, "best": s[-1] if s else 0, "windows": len(s)}))
EOF
}

if want ddp; then
	ts "NCCL: the data-parallel path launched with one process on the GPU (124M, 30 iterations)"
	rm -rf /tmp/rn
	timeout 200 "$K" launch --nproc 1 -- train --config .gpu/c124-nccl.config --out /tmp/rn 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 8
	python3 - /tmp/rn "$FPT" <<'EOF' | tee /tmp/summary_ddp
import json, sys
d, fpt = sys.argv[1], int(sys.argv[2])
m = json.load(open(d + "/training_metrics.json"))
rows = [json.loads(l) for l in open(d + "/metrics.jsonl") if '"train"' in l]
s = sorted(r["throughput"] for r in rows if r["step"] > 10)
tok = s[len(s) // 2] if s else 0
dd = m.get("ddp", {})
hw = {k: v for k, v in m.items() if "mem" in k or "gpu" in k or "hardware" in k}
print(f"NCCL world 1: status {m.get('status')}, {m.get('final_iteration')} iterations, {tok:.0f} tok/s "
      f"(MFU {100 * tok * fpt / 989e12:.1f}%); ddp {json.dumps(dd)[:240]}; hardware {json.dumps(hw)[:300]}")
EOF
	python3 -c "import json; j=json.load(open('/tmp/rn/hw_stats.json')); print('hw_stats.json:', json.dumps(j)[:700])" 2>&1 | tail -n 1
	cp /tmp/rn/hw_stats.json "$OUT/hw_stats_nccl.json" 2>/dev/null
	say "$(cat /tmp/summary_ddp 2>/dev/null || echo 'NCCL run FAILED')"
fi

if want speed; then
	ts "124M, context 1024, batch 12, bf16, no dropout: eager PyTorch, eager + torch.compile and knlp, twice each"
	# One statistic for all three: the median tokens/s of the steady-state steps after the
	# warm-up (the eager script's per-step times, knlp's per-step throughput in metrics.jsonl).
	for i in 1 2; do
		e=$(timeout 120 python3 scripts/ref/gpt2_eager.py 12 12 768 1024 12 50304 30 cuda bf16 | tail -n 1)
		ec=$(timeout 300 python3 scripts/ref/gpt2_eager.py 12 12 768 1024 12 50304 30 cuda bf16 compile \
			2>/tmp/compile_err.txt | tail -n 1)
		[ -n "$ec" ] || tail -n 3 /tmp/compile_err.txt
		rm -rf /tmp/r124
		timeout 200 "$K" train --config .gpu/c124-nd.config --out /tmp/r124 >/tmp/k124.txt 2>&1
		k=$(steady /tmp/r124)
		python3 - "$e" "$ec" "$k" "$FPT" <<'EOF' | tee -a /tmp/summary_speed
import json, sys
e, ec, k = (json.loads(a or "{}") for a in sys.argv[1:4])
fpt = int(sys.argv[4])
et, ct, kt = e.get("tokens_per_sec_median", 0), ec.get("tokens_per_sec_median", 0), k.get("median", 0)
mfu = lambda r: 100 * r * fpt / 989e12
ratio = lambda a, b: a / b if b else float("nan")
print(f"124M bf16 T1024 B12 (dropout 0), median tok/s: knlp {kt:.0f} (MFU {mfu(kt):.1f}%), eager {et:.0f} "
      f"(MFU {mfu(et):.1f}%), torch.compile {ct:.0f} (MFU {mfu(ct):.1f}%); knlp/eager {ratio(kt, et):.3f}x, "
      f"knlp/compile {ratio(kt, ct):.3f}x")
EOF
	done
	tr '\r' '\n' </tmp/k124.txt | grep -av "^$" | tail -n 3
	cp /tmp/r124/metrics.jsonl "$OUT/metrics_124m.jsonl" 2>/dev/null
	say "$(tr '\n' ';' </tmp/summary_speed 2>/dev/null || echo '124M run FAILED')"
fi

if want profile; then
	ts "kernel profile of 3 steps: knlp vs eager PyTorch (124M bf16, no dropout)"
	KNLP_PROFILE=/tmp/eager_trace.json timeout 120 python3 scripts/ref/gpt2_eager.py 12 12 768 1024 12 50304 5 cuda bf16 | tail -n 1
	rm -rf /tmp/rp
	KNLP_PROFILE=/tmp/knlp_trace.json KNLP_PROFILE_STEPS=6:8 timeout 200 "$K" train --config .gpu/c124-nd.config \
		--out /tmp/rp --set MAX_ITERS=10 2>&1 | tr '\r' '\n' | grep -a "profile:\|error"
	python3 scripts/ref/profile_summary.py knlp=/tmp/knlp_trace.json eager=/tmp/eager_trace.json --top 25 2>&1 |
		tee "$OUT/profile_summary.txt"
	gzip -c /tmp/knlp_trace.json >"$OUT/knlp_trace.json.gz" 2>/dev/null
	gzip -c /tmp/eager_trace.json >"$OUT/eager_trace.json.gz" 2>/dev/null
	say "profile: $(grep -E '^(busy|span)' "$OUT/profile_summary.txt" | tr -s ' ' | tr '\n' ';')"
fi

if want tier; then
	ts "tiered inference on the GPU: 124M, middle tier in host memory, slow tier read from a file"
	[ -d /tmp/r124 ] || timeout 200 "$K" train --config .gpu/c124-nd.config --out /tmp/r124 >/dev/null 2>&1
	timeout 150 "$K" tier bench --checkpoint /tmp/r124 --source adam --cuts 0.3,0.5 --warmup 3 --iters 20 \
		--out /tmp/tier124 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 14 | tee /tmp/tier.txt
	say "tier bench 124M: $(grep -iE "untiered|emulated|offload" /tmp/tier.txt | tr -s ' ' | tr '\n' ';' | cut -c1-400)"
fi

if want optim; then
	ts "optimizer step on the GPU, 124M parameter set"
	ob=$(timeout 120 "$B/knlp_bench" optim 20 cuda | tail -n 1)
	echo "$ob"
	say "optim on cuda: $ob"
fi

if want prune; then
	ts "pruned tiny run on the GPU (AdamWPrune bitter7, 50%), killed at step 130 and resumed"
	for d in /tmp/ta /tmp/tb; do rm -rf $d; done
	timeout 120 "$K" train --config .gpu/tiny-prune.config --out /tmp/ta --set MAX_ITERS=200 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 4
	KNLP_FAULT_KILL_AT=after_step#130 timeout 120 "$K" train --config .gpu/tiny-prune.config --out /tmp/tb --set MAX_ITERS=200 >/dev/null 2>&1
	echo "killed run exit $?"
	timeout 120 "$K" train --config .gpu/tiny-prune.config --set MAX_ITERS=200 --resume /tmp/tb 2>&1 | tr '\r' '\n' | grep -av "^$" | tail -n 2
	python3 - <<'EOF' | tee /tmp/summary_prune
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
print("tiny bitter7 on cuda: final sparsity %.4f (target %s), best val loss %.4f; resumed vs uninterrupted: weights %s, optimizer %s, logged losses max diff %.3g over %d/%d"
      % (p.get("final_sparsity", -1), p.get("target_sparsity"), a.get("best_val_loss", -1), "identical" if same_w else "DIFFER",
         "identical" if same_o else "DIFFER", maxd, len(la), len(lb)))
EOF
	say "$(cat /tmp/summary_prune 2>/dev/null || echo 'pruned run FAILED')"
	"$K" sample --checkpoint /tmp/ta --prompt "The kernel" --tokens 60 --seed 1 2>&1 | tail -n 4
	"$K" eval --checkpoint /tmp/ta 2>&1 | tail -n 1
fi

if want export; then
	ts "export a 124M run to Hugging Face and evaluate with transformers"
	rm -rf /tmp/hf124
	[ -d /tmp/r124 ] || timeout 200 "$K" train --config .gpu/c124-nd.config --out /tmp/r124 >/dev/null 2>&1
	"$K" export --checkpoint /tmp/r124 --format hf --out /tmp/hf124 2>&1 | tail -n 2
	ke=$("$K" eval --checkpoint /tmp/r124 --data .gpu/data/gpt2 --batch 16 2>/dev/null | tail -n 1)
	he=$(timeout 120 python3 scripts/ref/hf_eval.py /tmp/hf124 .gpu/data/gpt2/val.bin cuda 2>/dev/null | tail -n 1)
	say "$(python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f\"val loss knlp {a['val_loss']:.6f} vs transformers {b['val_loss']:.6f} over {a['tokens']} tokens (diff {abs(a['val_loss']-b['val_loss']):.2e})\")" "$ke" "$he" 2>&1 | tail -n 1)"
fi

if want hfllama; then
	ts "Hugging Face Llama-family folders: knlp's loss and logits vs transformers' on the same random folders"
	mkdir -p /tmp/hfv && head -c 20000 .gpu/data/gpt2/val.bin >/tmp/hfv/val.bin && cp .gpu/data/gpt2/meta.json /tmp/hfv/
	for spec in "qwen2 --tied --kv-heads 2" "llama --kv-heads 1 --rope-scaling llama3"; do
		set -- $spec
		arch=$1; shift
		rm -rf /tmp/hf_$arch
		python3 scripts/ref/hf_random_model.py /tmp/hf_$arch --arch $arch --tokenizer .gpu/tokenizers/gpt2 \
			--hidden 256 --heads 4 --inter 512 --layers 2 --ctx 256 --mild "$@" >/dev/null 2>&1
		ke=$(timeout 300 "$K" eval --checkpoint /tmp/hf_$arch --data /tmp/hfv --ctx 128 --logits /tmp/hf_$arch.logits \
			2>/dev/null | tail -n 1)
		he=$(timeout 300 python3 scripts/ref/hf_eval.py /tmp/hf_$arch /tmp/hfv/val.bin cuda 128 \
			--logits /tmp/hf_$arch.logits 2>/dev/null | tail -n 1)
		say "$(python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f\"$arch: val loss knlp {a['val_loss']:.7f} vs transformers {b['val_loss']:.7f} over {a['tokens']} tokens (relative diff {abs(a['val_loss']-b['val_loss'])/b['val_loss']:.2e}; bound 1e-4); first window's logits: max abs diff {b['max_abs_logit_diff']:.2e} of max {b['max_logit']:.2f}\")" "$ke" "$he" 2>&1 | tail -n 1)"
	done
fi

ts "done"
echo
for s in "${summary[@]}"; do echo "SUMMARY: $s"; done
