#!/bin/bash
# make bench: every figure is a ratio against a baseline run in this same invocation.
# Results go to bench-results/<stamp>.json and to the terminal.
set -eu
BUILD=${1:-build}
B="$BUILD/knlp_bench"
PY=/usr/bin/python3
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/bench-results"
mkdir -p "$out"
stamp=$(date +%Y%m%d_%H%M%S)
res="$out/$stamp.json"
echo "{" >"$res"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "machine: $cpu, $(nproc) cores; libtorch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)"
printf '  "machine": "%s, %s cores",\n' "$cpu" "$(nproc)" >>"$res"

jq_get() { $PY -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio() { $PY -c "print(f'{$1/$2:.2f}')"; }

want() { [ -z "${BENCH_ONLY:-}" ] || [ "$BENCH_ONLY" = "$1" ]; }

# The malloc setting knlp's training loops and knlp_bench use (train/device.cpp tune_allocator:
# mmap threshold 32 MiB, trim threshold 1 GiB, no mmapped blocks), as glibc's environment
# variables for the Python baselines. with_alloc default|knlp CMD...: CMD under that setting.
KALLOC="MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_MAX_=0"
with_alloc() { local a=$1; shift; if [ "$a" = knlp ]; then (export $KALLOC; "$@"); else "$@"; fi; }
# eager_gpt2 THREADS ALLOC ARGS...: the eager GPT-2 reference step on THREADS threads.
eager_gpt2() { local th=$1 a=$2; shift 2; with_alloc "$a" env KNLP_BENCH_THREADS=$th $PY "$top/scripts/ref/gpt2_eager.py" "$@"; }
# libtorch's float32 products run in OpenBLAS, whose kernel set OPENBLAS_CORETYPE picks (this
# workplace sets Haswell, AVX2, everywhere). On an AVX-512 CPU the eager baseline also runs
# with OpenBLAS's AVX-512 kernels (SkylakeX), and the better of the two counts.
blas_sets="env"
grep -qw avx512f /proc/cpuinfo && blas_sets="env SkylakeX"
with_blas() { local b=$1; shift; if [ "$b" = env ]; then "$@"; else OPENBLAS_CORETYPE=$b "$@"; fi; }

if want attention; then
echo
echo "== Attention variants (L4 H4 C128, byte vocabulary): training (B12 T128) and cached decoding (batch 1, to 512 tokens), relative to vanilla"
base_t=; base_d=
printf '  "attention": {' >>"$res"
sep=
for v in vanilla mla kvsplice hybrid-last hybrid-first ra gate ra-gate; do
	a=$("$B" attention $v 4 4 128 12 24)
	t=$(jq_get "$a" train_tokens_per_sec); d=$(jq_get "$a" decode_tokens_per_sec)
	[ -z "$base_t" ] && base_t=$t && base_d=$d
	printf "  %-13s train %6.0f tok/s (%sx)   decode %6.0f tok/s (%sx)   cache %s values/token\n" "$v" "$t" "$(ratio "$t" "$base_t")" \
		"$d" "$(ratio "$d" "$base_d")" "$(jq_get "$a" cache_values_per_token)"
	printf '%s"%s": %s' "$sep" "$v" "$a" >>"$res"
	sep=", "
done
printf '},\n' >>"$res"
fi

if want vision; then
echo
echo "== Image training step (best of 3; knlp 2 threads, eager its best of 1 and 2): knlp vs plain eager PyTorch (Python),"
echo "   same libtorch, channels-first and channels-last"
echo "   (knlp's ResNet: oneDNN's blocked layout with Winograd 3x3 convolutions; its channels-last figure is libtorch's ops)"
printf '  "vision": {' >>"$res"
sep=
for shape in "lenet5 512 10" "resnet18 32 4"; do
	set -- $shape
	# Short steps on a shared 2-core machine are noisy: best of three interleaved runs each.
	best() { local b= r; for i in 1 2 3; do r=$("$@"); if [ -z "$b" ] || [ "$($PY -c "import json,sys; print(int(json.loads(sys.argv[1])['images_per_sec'] > json.loads(sys.argv[2])['images_per_sec']))" "$r" "$b")" = 1 ]; then b=$r; fi; done; echo "$b"; }
	k=$(best "$B" vision "$@"); kc=$(best "$B" vision "$@" channels_last)
	# Eager at its best of 1 and 2 threads (2-core machines: one thread can win on small steps).
	better() { if [ "$($PY -c "import json,sys; print(int(json.loads(sys.argv[1])['images_per_sec'] >= json.loads(sys.argv[2])['images_per_sec']))" "$1" "$2")" = 1 ]; then echo "$1"; else echo "$2"; fi; }
	p=$(better "$(best $PY "$top/scripts/ref/vision_eager.py" "$@")" "$(KNLP_BENCH_THREADS=1 best $PY "$top/scripts/ref/vision_eager.py" "$@")")
	pc=$(better "$(best $PY "$top/scripts/ref/vision_eager.py" "$@" channels_last)" \
		"$(KNLP_BENCH_THREADS=1 best $PY "$top/scripts/ref/vision_eager.py" "$@" channels_last)")
	# Attribution: knlp with glibc's default allocator, eager with knlp's allocator settings
	# (tune_allocator: activations stay on the heap instead of being mapped and unmapped).
	kd=$(KNLP_MALLOC_DEFAULT=1 best "$B" vision "$@")
	kn=$("$B" vision "$@" no_onednn) # one run: without oneDNN the step is several times slower
	pt=$(with_alloc knlp best $PY "$top/scripts/ref/vision_eager.py" "$@")
	ki=$(jq_get "$k" images_per_sec); kci=$(jq_get "$kc" images_per_sec)
	pi=$(jq_get "$p" images_per_sec); pci=$(jq_get "$pc" images_per_sec)
	kdi=$(jq_get "$kd" images_per_sec); pti=$(jq_get "$pt" images_per_sec)
	printf "  %-8s B%-4s knlp %6.0f img/s (channels-last %6.0f) | eager %6.0f img/s (channels-last %6.0f) | ratio %sx (best vs best %sx)\n" \
		"$1" "$2" "$ki" "$kci" "$pi" "$pci" "$(ratio "$ki" "$pi")" \
		"$($PY -c "print(f'{max($ki, $kci) / max($pi, $pci):.2f}')")"
	printf "  %-8s      allocator: knlp with glibc defaults %6.0f img/s | eager with knlp's malloc settings %6.0f img/s (knlp vs it %sx)\n" \
		"" "$kdi" "$pti" "$(ratio "$ki" "$pti")"
	printf "  %-8s      oneDNN off (libtorch's own convolutions): knlp %6.0f img/s (%sx of oneDNN's)\n" \
		"" "$(jq_get "$kn" images_per_sec)" "$(ratio "$(jq_get "$kn" images_per_sec)" "$ki")"
	extra=
	if [ "$1" = lenet5 ]; then
		# LeNet-5's fused ReLU + max pool (models/pool.h) against libtorch's two ops, in the
		# whole step and alone (both pooling layers, forward and backward).
		kp=$(best "$B" vision "$@" libtorch_pool); pool=$("$B" pool 20)
		pf=$($PY -c "import json,sys; j=json.loads(sys.argv[1]); print(f\"{j['fused_forward_ms'] + j['fused_backward_ms']:.1f} vs {j['libtorch_forward_ms'] + j['libtorch_backward_ms']:.1f} ms ({j['speedup']:.2f}x)\")" "$pool")
		printf "  %-8s      fused ReLU + max pool: the step with libtorch's relu + max_pool2d %6.0f img/s (fused %sx); the two layers alone %s\n" \
			"" "$(jq_get "$kp" images_per_sec)" "$(ratio "$ki" "$(jq_get "$kp" images_per_sec)")" "$pf"
		extra=", \"knlp_libtorch_pool\": $kp, \"pool\": $pool"
	else
		# ResNets: oneDNN's blocked layout (models/onednn.h) with and without Winograd,
		# against the same model on libtorch's ops (what knlp ran before it).
		kdir=$(best "$B" vision "$@" direct); klt=$(best "$B" vision "$@" libtorch_ops)
		printf "  %-8s      oneDNN blocked layout: direct convolutions %6.0f img/s, libtorch's ops %6.0f img/s (Winograd %sx direct; blocked %sx libtorch's ops)\n" \
			"" "$(jq_get "$kdir" images_per_sec)" "$(jq_get "$klt" images_per_sec)" \
			"$(ratio "$ki" "$(jq_get "$kdir" images_per_sec)")" "$(ratio "$(jq_get "$kdir" images_per_sec)" "$(jq_get "$klt" images_per_sec)")"
		extra=", \"knlp_direct\": $kdir, \"knlp_libtorch_ops\": $klt"
	fi
	if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
		# Native bf16: knlp's bf16 step (the ResNets: the blocked engine in bf16; channels-last:
		# libtorch's ops under autocast) against eager + autocast at its best of 1 and 2
		# threads, each in its better layout.
		kb=$(KNLP_BENCH_BF16=1 best "$B" vision "$@"); kbc=$(KNLP_BENCH_BF16=1 best "$B" vision "$@" channels_last)
		pb=$(better "$(best $PY "$top/scripts/ref/vision_eager.py" "$@" bf16)" "$(KNLP_BENCH_THREADS=1 best $PY "$top/scripts/ref/vision_eager.py" "$@" bf16)")
		pbc=$(better "$(best $PY "$top/scripts/ref/vision_eager.py" "$@" channels_last bf16)" \
			"$(KNLP_BENCH_THREADS=1 best $PY "$top/scripts/ref/vision_eager.py" "$@" channels_last bf16)")
		kbi=$($PY -c "import json,sys; print(max(json.loads(a)['images_per_sec'] for a in sys.argv[1:]))" "$kb" "$kbc")
		pbi=$($PY -c "import json,sys; print(max(json.loads(a)['images_per_sec'] for a in sys.argv[1:]))" "$pb" "$pbc")
		printf "  %-8s      bf16: knlp %6.0f img/s | eager + autocast bf16 %6.0f img/s | ratio %sx (each its better layout)\n" \
			"" "$kbi" "$pbi" "$(ratio "$kbi" "$pbi")"
		extra="$extra, \"knlp_bf16\": $kb, \"knlp_bf16_channels_last\": $kbc, \"eager_bf16\": $pb, \"eager_bf16_channels_last\": $pbc"
	else
		printf "  %-8s      bf16: not measured (this CPU has no native bf16: no AVX512-BF16 or AMX-BF16)\n" ""
	fi
	printf '%s"%s": {"knlp": %s, "knlp_channels_last": %s, "knlp_malloc_default": %s, "knlp_no_onednn": %s, "eager": %s, "eager_channels_last": %s, "eager_tuned_malloc": %s%s}' \
		"$sep" "$1" "$k" "$kc" "$kd" "$kn" "$p" "$pc" "$pt" "$extra" >>"$res"
	sep=", "
done
printf '},\n' >>"$res"
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
	# ResNet-18 at the presets' batch (defconfigs/resnet18-*: CONFIG_BATCH_SIZE=128) in bf16:
	# eager + autocast's best arm of layout (NCHW, channels-last) x threads (1, 2) x allocator
	# (glibc's default, knlp's setting), then 3 alternating pairs of knlp and that arm.
	echo "  resnet18 B128 (the presets' batch), bf16: eager + autocast's arms (img/s):"
	arms="{"; bestr=0
	for lay in "" channels_last; do
		for th in 1 2; do
			for alloc in default knlp; do
				r=$(with_alloc $alloc env KNLP_BENCH_THREADS=$th $PY "$top/scripts/ref/vision_eager.py" resnet18 128 2 $lay bf16)
				ri=$(jq_get "$r" images_per_sec)
				arms="$arms\"${lay:-nchw} ${th}t $alloc\": $r, "
				printf "      %-13s %s thread(s), %-7s allocator: %6.1f\n" "${lay:-nchw}" "$th" "$alloc" "$ri"
				if $PY -c "import sys; sys.exit(0 if $ri > $bestr else 1)"; then
					bestr=$ri; barm=("$lay" "$th" "$alloc")
				fi
			done
		done
	done
	arms="${arms%, }}"
	pairs=""
	for i in 1 2 3; do
		k1=$(jq_get "$(KNLP_BENCH_BF16=1 "$B" vision resnet18 128 2)" images_per_sec)
		e1=$(jq_get "$(with_alloc "${barm[2]}" env KNLP_BENCH_THREADS="${barm[1]}" $PY "$top/scripts/ref/vision_eager.py" resnet18 128 2 ${barm[0]} bf16)" images_per_sec)
		pairs="$pairs${pairs:+, }[$k1, $e1]"
	done
	paired=$($PY -c "import statistics; print(f'{statistics.median(a / b for a, b in [$pairs]):.3f}')")
	printf "      knlp bf16 (blocked engine) / eager's best arm (%s, %s thread(s), %s allocator), 3 alternating pairs: median %sx (%s)\n" \
		"${barm[0]:-nchw}" "${barm[1]}" "${barm[2]}" "$paired" "$($PY -c "print(', '.join(f'{a:.0f}/{b:.0f}' for a, b in [$pairs]))")"
	printf '  "resnet18_b128_bf16": {"eager_arms": %s, "paired_knlp_eager_best": [%s], "paired_median_ratio": %s},\n' \
		"$arms" "$pairs" "$paired" >>"$res"
fi
fi

if want train || want optim; then
echo
echo "== GPT-2 training step (forward, loss, backward, clip, AdamW): knlp (2 threads) vs plain eager PyTorch"
echo "   (Python, same libtorch) at its best of 1 and 2 threads; each with glibc's default allocator and with"
echo "   the setting knlp trains with (mallopt: mmap threshold 32 MiB, trim threshold 1 GiB, no mmapped blocks;"
echo "   env MALLOC_*_ for eager)"
native_bf16=$(grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo 1 || echo 0)
for shape in "a 4 4 128 64 12 50304 20" "b 6 6 384 256 12 256 8" "c 12 12 768 64 4 50304 3"; do
	set -- $shape
	name=$1; shift
	k=$("$B" train "$@")
	kd=$(KNLP_MALLOC_DEFAULT=1 "$B" train "$@")
	uon=$("$B" train "$@") # all on, right before the head off
	u=$(KNLP_BENCH_OFF=head "$B" train "$@")
	# Each fusion off alone, and all of them off: its gain in the whole step, against a run
	# with everything on right before it (the machine drifts over minutes).
	offs="{"
	for f in vocab_blocks attention layernorm gelu gemm head,attention,layernorm,gelu,gemm; do
		offs="$offs\"$f\": {\"on\": $("$B" train "$@"), \"off\": $(KNLP_BENCH_OFF=$f "$B" train "$@")}, "
	done
	offs="${offs%, }}"
	eager="{"; best=0; bestname=""
	for blas in $blas_sets; do
		for th in 1 2; do
			for alloc in default knlp; do
				p=$(with_blas $blas eager_gpt2 $th $alloc "$@")
				pt=$(jq_get "$p" tokens_per_sec)
				arm="${th}t_$alloc"; [ "$blas" = env ] || arm="${arm}_blas-$blas"
				eager="$eager\"$arm\": $p, "
				if $PY -c "import sys; sys.exit(0 if $pt > $best else 1)"; then
					best=$pt; bestth=$th; bestalloc=$alloc; bestblas=$blas
					bestname="$th thread(s), $alloc allocator, OpenBLAS kernels: ${blas/env/${OPENBLAS_CORETYPE:-detected}}"
				fi
			done
		done
	done
	ab="null"; kb="null"; kb_off="null"; bpairs=""; bpaired="null"
	if [ "$native_bf16" = 1 ]; then
		kb=$(KNLP_BENCH_BF16=1 "$B" train "$@")
		kb_off=$(KNLP_BENCH_BF16=1 KNLP_BENCH_OFF=gemm_bf16 "$B" train "$@")
		# Eager + autocast at its best of 1 and 2 threads and of both allocator settings.
		for th in 1 2; do
			for alloc in default knlp; do
				a1=$(eager_gpt2 $th $alloc "$@" cpu bf16)
				if [ "$ab" = null ] || $PY -c "import json,sys; sys.exit(0 if json.loads(sys.argv[1])['tokens_per_sec'] > json.loads(sys.argv[2])['tokens_per_sec'] else 1)" "$a1" "$ab"; then
					ab=$a1; abth=$th; aballoc=$alloc
				fi
			done
		done
		# The headline bf16 ratio: three alternating pairs against that best arm.
		for i in 1 2 3; do
			k1=$(jq_get "$(KNLP_BENCH_BF16=1 "$B" train "$@")" tokens_per_sec)
			e1=$(jq_get "$(eager_gpt2 $abth $aballoc "$@" cpu bf16)" tokens_per_sec)
			bpairs="$bpairs${bpairs:+, }[$k1, $e1]"
		done
		bpaired=$($PY -c "import statistics; print(f'{statistics.median(a / b for a, b in [$bpairs]):.3f}')")
	fi
	eager="${eager%, }}"
	kt=$(jq_get "$k" tokens_per_sec); kdt=$(jq_get "$kd" tokens_per_sec)
	printf "  (%s) L%s H%s C%s T%s B%s V%s: knlp %.0f tok/s (MFU %.1f%% of %.0f GFLOP/s fp32 measured, RSS %.0f MB; glibc default allocator %.0f)\n" \
		"$name" "$1" "$2" "$3" "$4" "$5" "$6" "$kt" "$($PY -c "print(100*$(jq_get "$k" mfu))")" \
		"$(jq_get "$k" peak_gflops)" "$(jq_get "$k" peak_rss_mb)" "$kdt"
	$PY - "$eager" <<'PY'
import json, sys
e = json.loads(sys.argv[1])
def arm(k):  # "2t_knlp_blas-SkylakeX" -> "2 thread(s) knlp, OpenBLAS SkylakeX"
    th, rest = k.split("t_", 1)
    alloc, _, blas = rest.partition("_blas-")
    return f"{th} thread(s) {alloc}" + (f", OpenBLAS {blas}" if blas else "")
print("      eager fp32 tok/s: " + ", ".join(f"{arm(k)} {v['tokens_per_sec']:.0f}" for k, v in e.items()))
PY
	printf "      knlp / best eager fp32 (%s): %sx; knlp's allocator / glibc default: %sx\n" "$bestname" "$(ratio "$kt" "$best")" "$(ratio "$kt" "$kdt")"
	# Single runs on a shared VM vary by 5-20%: the headline ratio is the median of five
	# more alternating pairs of knlp and eager's best arm.
	pairs=""
	for i in 1 2 3 4 5; do
		k1=$(jq_get "$("$B" train "$@")" tokens_per_sec)
		e1=$(with_blas $bestblas eager_gpt2 $bestth $bestalloc "$@")
		pairs="$pairs${pairs:+, }[$k1, $(jq_get "$e1" tokens_per_sec)]"
	done
	paired=$($PY -c "import statistics,sys; p=[$pairs]; print(f'{statistics.median(a / b for a, b in p):.3f}')")
	printf "      paired: knlp / eager's best arm over 5 alternating runs: median %sx (%s)\n" "$paired" \
		"$($PY -c "print(', '.join(f'{a:.0f}/{b:.0f}' for a, b in [$pairs]))")"
	if [ "$ab" != null ]; then
		printf "      bf16: knlp %.0f tok/s (MFU %.1f%% of %.0f GFLOP/s bf16 measured) | eager + autocast bf16 %.0f tok/s | knlp bf16 / that: %sx; knlp fp32 / that: %sx\n" \
			"$(jq_get "$kb" tokens_per_sec)" "$($PY -c "print(100*$(jq_get "$kb" mfu))")" "$(jq_get "$kb" peak_gflops)" \
			"$(jq_get "$ab" tokens_per_sec)" "$(ratio "$(jq_get "$kb" tokens_per_sec)" "$(jq_get "$ab" tokens_per_sec)")" \
			"$(ratio "$kt" "$(jq_get "$ab" tokens_per_sec)")"
		printf "      bf16 paired: knlp / eager + autocast's best arm (%s thread(s), %s allocator) over 3 alternating runs: median %sx (%s)\n" \
			"$abth" "$aballoc" "$bpaired" "$($PY -c "print(', '.join(f'{a:.0f}/{b:.0f}' for a, b in [$bpairs]))")"
		printf "      knlp's bf16 GEMM off (oneDNN's products, CONFIG_CPU_GEMM_BF16=n): %.0f tok/s (knlp's: %.0f)\n" \
			"$(jq_get "$kb_off" tokens_per_sec)" "$(jq_get "$kb" tokens_per_sec)"
	else
		echo "      eager + autocast bf16: not measured (this CPU has no native bf16: no AVX512-BF16 or AMX-BF16)"
	fi
	uont=$(jq_get "$uon" tokens_per_sec)
	printf "      fused head+loss vs plain libtorch head (run right after): %.0f vs %.0f tok/s (%sx), peak RSS %.0f vs %.0f MB\n" \
		"$uont" "$(jq_get "$u" tokens_per_sec)" "$(ratio "$uont" "$(jq_get "$u" tokens_per_sec)")" \
		"$(jq_get "$uon" peak_rss_mb)" "$(jq_get "$u" peak_rss_mb)"
	$PY - "$k" "$offs" <<'PY'
import json, sys
k, offs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
names = {"vocab_blocks": "head in vocabulary blocks", "attention": "blocked attention", "layernorm": "add+LayerNorm", "gelu": "bias+GELU",
         "gemm": "knlp's fp32 GEMM (" + k.get("gemm", "?") + ")", "head,attention,layernorm,gelu,gemm": "all five (with the head)"}
print("      fusions, each off against all on right before it: " + "; ".join(
    f"{names[f]} {v['off']['tokens_per_sec']:.0f} vs {v['on']['tokens_per_sec']:.0f} tok/s"
    f" (gain {v['on']['tokens_per_sec'] / v['off']['tokens_per_sec']:.2f}x)"
    for f, v in offs.items()))
PY
	printf '  "train_%s": {"knlp": %s, "knlp_glibc_default_allocator": %s, "knlp_before_unfused_head": %s, "knlp_unfused_head": %s, "knlp_fusions_off": %s, "eager": %s, "eager_best_tokens_per_sec": %s, "paired_knlp_eager_best": [%s], "paired_median_ratio": %s, "eager_autocast_bf16": %s, "knlp_bf16": %s, "knlp_bf16_onednn_gemm": %s, "paired_bf16_knlp_eager": [%s], "paired_bf16_median_ratio": %s, "native_bf16": %s},\n' \
		"$name" "$k" "$kd" "$uon" "$u" "$offs" "$eager" "$best" "$pairs" "$paired" "$ab" "$kb" "$kb_off" "$bpairs" "$bpaired" "$native_bf16" >>"$res"
done

echo
echo "== Fused CPU kernels (models/fused.h) against the libtorch operators they replace, forward + backward,"
echo "   one layer of shape (b) (batch 12, 256 tokens, 384 channels, 6 heads), medians of 10"
echo "   runs of each, fused and libtorch alternating"
kn=$("$B" kernels 12 256 384 6 10)
$PY - "$kn" <<'PY'
import json, sys
k = json.loads(sys.argv[1])
for name, label in (("attention", "causal attention in query blocks"), ("add_layernorm", "residual add + LayerNorm"),
                    ("bias_gelu", "bias + GELU"), ("attention_bf16", "causal attention, bf16"),
                    ("bias_gelu_bf16", "bias + GELU, bf16"), ("head_bf16_a", "head, bf16 (knlp's product), (a)"),
                    ("head_bf16_c", "head, bf16 (knlp's product), (c)"), ("cross_entropy", "head cross-entropy, 768 x 50304"),
                    ("head_vocab_blocks", "whole head in vocabulary blocks")):
    if name not in k:  # the bf16 head arms need AVX512-BF16
        continue
    r = k[name]
    print(f"  {label:34s} {r['fused_ms']:7.2f} ms vs {r['unfused_ms']:7.2f} ms: {r['speedup']:.2f}x")
PY
printf '  "fused_kernels": %s,\n' "$kn" >>"$res"

echo
echo "== float32 matrix products of one GPT-2 layer at shape (b) (forward, input and weight gradients of"
echo "   the four linears): knlp's AVX-512 kernel (models/gemm.h) vs libtorch (OpenBLAS), medians of 7"
echo "   alternating calls; with the OpenBLAS kernels this environment selects and with its AVX-512 ones"
gm="{"
for blas in $blas_sets; do
	g=$(with_blas $blas env KNLP_GEMM=1 "$B" gemm 12 256 384 7)
	label=${blas/env/${OPENBLAS_CORETYPE:-detected}}
	$PY - "$g" "$label" <<'PY'
import json, sys
g, label = json.loads(sys.argv[1]), sys.argv[2]
print(f"  OpenBLAS {label}: knlp {g['knlp_ms']:.1f} ms vs libtorch {g['libtorch_ms']:.1f} ms for the layer's 12 products: {g['speedup']:.2f}x"
      f" (per product {min(p['speedup'] for p in g['products']):.2f}-{max(p['speedup'] for p in g['products']):.2f}x)")
PY
	gm="$gm\"$label\": $g, "
done
printf '  "gemm": %s},\n' "${gm%, }" >>"$res"

if [ "$native_bf16" = 1 ] && grep -qw avx512_bf16 /proc/cpuinfo; then
	echo
	echo "== bf16 matrix products of the same layer: knlp's AVX512-BF16 kernel (models/gemm_bf16.cpp) vs"
	echo "   libtorch's bf16 mm (oneDNN), medians of 7 alternating calls; the weight gradients in float32"
	echo "   (libtorch: its bf16 product and the cast autocast's backward runs)"
	g=$(KNLP_BENCH_BF16=1 "$B" gemm 12 256 384 7)
	$PY - "$g" <<'PY'
import json, sys
g = json.loads(sys.argv[1])
print(f"  knlp {g['knlp_ms']:.1f} ms vs libtorch {g['libtorch_ms']:.1f} ms for the layer's 12 products: {g['speedup']:.2f}x"
      f" (per product {min(p['speedup'] for p in g['products']):.2f}-{max(p['speedup'] for p in g['products']):.2f}x,"
      f" knlp {min(p['knlp_gflops'] for p in g['products']):.0f}-{max(p['knlp_gflops'] for p in g['products']):.0f} GFLOP/s)")
PY
	printf '  "gemm_bf16": %s,\n' "$g" >>"$res"
fi

echo
echo "== AdamW step on the GPT-2 124M parameter set: knlp fused vs torch::optim::AdamW"
o=$("$B" optim 5)
printf "  knlp %.1f ms, libtorch %.1f ms: %sx\n" "$(jq_get "$o" knlp_step_ms)" "$(jq_get "$o" libtorch_step_ms)" "$(jq_get "$o" speedup)"
printf '  "adamw_124m": %s,\n' "$o" >>"$res"

echo
echo "== Global pruning threshold over the 124M prunable weights: exact radix select vs torch::kthvalue vs 2% sampling"
s=$("$B" select 0)
printf "  exact %.3f s, torch::kthvalue %.3f s (%sx), 2%% sampling %.3f s (relative error %s); exact == kthvalue: %s\n" \
	"$(jq_get "$s" exact_s)" "$(jq_get "$s" torch_kthvalue_s)" "$(jq_get "$s" speedup_vs_kthvalue)" \
	"$(jq_get "$s" sampled_2pct_s)" "$(jq_get "$s" sampled_rel_error)" "$(jq_get "$s" exact_equals_torch)"
printf '  "select_124m": %s,\n' "$s" >>"$res"
fi

if want quant; then
echo
echo "== GGML block coding (one thread, MB/s of float32): knlp vs ggml's reference coders (libggml-base.so), same data"
qk=$("$B" quant)
lib="$(dirname "$0")/../datasets/ggml/libggml-base.so"
if [ -s "$lib" ]; then qg=$(/usr/bin/python3 "$(dirname "$0")/ref/ggml_speed.py" "$lib"); else qg='{}'; fi
/usr/bin/python3 - "$qk" "$qg" <<'PY'
import json, sys
k, g = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for t in k:
    line = f"  {t:5} quantize {k[t]['quantize_mb_s']:8.0f}  dequantize {k[t]['dequantize_mb_s']:8.0f}"
    if t in g:
        line += (f"   ggml {g[t]['quantize_mb_s']:8.0f} / {g[t]['dequantize_mb_s']:8.0f}"
                 f"   ratio {k[t]['quantize_mb_s'] / g[t]['quantize_mb_s']:.2f}x / "
                 f"{k[t]['dequantize_mb_s'] / g[t]['dequantize_mb_s']:.2f}x")
    print(line)
PY
printf '  "ggml_quant": {"knlp": %s, "ggml": %s},\n' "$qk" "$qg" >>"$res"
fi

if want fim; then
echo
echo "== Fisher scoring (batch-1 windows, per-window squared gradients): knlp vs eager PyTorch, same model and shapes"
for shape in "4 4 128 128 256 64" "6 8 512 256 50304 16"; do
	fk=$("$B" fim $shape)
	fp=$(/usr/bin/python3 "$(dirname "$0")/ref/fisher_eager.py" $shape)
	printf "  L H C T V windows = %s: knlp empirical %.0f tok/s (with the true Fisher too: %.0f), PyTorch eager %.0f tok/s, ratio %.2fx\n" \
		"$shape" "$(jq_get "$fk" empirical_tokens_per_sec)" "$(jq_get "$fk" both_tokens_per_sec)" \
		"$(jq_get "$fp" tokens_per_sec)" \
		"$(/usr/bin/python3 -c "print($(jq_get "$fk" empirical_tokens_per_sec) / $(jq_get "$fp" tokens_per_sec))")"
	printf '  "fim_%s": {"knlp": %s, "pytorch": %s},\n' "$(echo $shape | tr ' ' _)" "$fk" "$fp" >>"$res"
done
fi

if want gnn; then
echo
echo "== GNN (synthetic 10% DGraphFin graph): layout build, sampler batches/s, GraphSAGE steps/s vs eager PyTorch"
gnative=$(grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && echo 1 || echo 0)
if [ "$gnative" = 1 ]; then gk=$(KNLP_BENCH_BF16=1 "$B" gnn 370000); else gk=$("$B" gnn 370000); fi
# Eager does the same work (each layer aggregates the narrower width) at its best of 1 and 2 threads,
# each with glibc's default allocator and with knlp's malloc setting. sage THREADS ALLOC [bf16]
sage() { with_alloc "$2" env KNLP_BENCH_THREADS=$1 $PY "$top/scripts/ref/sage_eager.py" \
	"$(jq_get "$gk" batch_nodes)" "$(jq_get "$gk" batch_edges)" "$(jq_get "$gk" batch_supervised)" ${3:-}; }
gp1=$(sage 1 default); gp2=$(sage 2 default); gpk1=$(sage 1 knlp); gpk2=$(sage 2 knlp)
gp=$($PY - "$gp1" "$gp2" "$gpk1" "$gpk2" <<'PY'
import json, sys
runs = [json.loads(x) for x in sys.argv[1:5]]
arms = [(1, "default"), (2, "default"), (1, "knlp"), (2, "knlp")]
i = max(range(4), key=lambda j: runs[j]["train_steps_per_sec"])
w = dict(runs[i])
w["threads"], w["allocator"] = arms[i]
w["threads_1"], w["threads_2"] = runs[0]["train_steps_per_sec"], runs[1]["train_steps_per_sec"]
w["threads_1_knlp_allocator"], w["threads_2_knlp_allocator"] = runs[2]["train_steps_per_sec"], runs[3]["train_steps_per_sec"]
print(json.dumps(w))
PY
)
/usr/bin/python3 - "$gk" "$gp" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("  layout build (s): " + ", ".join(f"{m} {t:.2f}" for m, t in k["layout_s"].items()))
for s, r in k["sampler"].items():
    two = f", {r['threads_2']:.0f} on 2 ({r['threads_2'] / r['threads_1']:.2f}x)" if "threads_2" in r else " (built in order)"
    print(f"  sampler {s:<8}: {r['threads_1']:.0f} batches/s on 1 thread{two}")
print(f"  training: {k['train_steps_per_sec']:.1f} steps/s on page batches of {k['batch_nodes']:.0f} nodes, "
      f"{k['batch_edges']:.0f} edges; eager PyTorch {p['train_steps_per_sec']:.1f} (best of 1 / 2 threads, "
      f"default allocator {p['threads_1']:.1f} / {p['threads_2']:.1f}, knlp's setting "
      f"{p['threads_1_knlp_allocator']:.1f} / {p['threads_2_knlp_allocator']:.1f}): "
      f"{k['train_steps_per_sec'] / p['train_steps_per_sec']:.2f}x")
PY
gb=null
if [ "$gnative" = 1 ]; then
	gb1=$(sage 1 default bf16); gb2=$(sage 2 default bf16)
	gb=$($PY -c "import json,sys; print(json.dumps(max((json.loads(x) for x in sys.argv[1:3]), key=lambda r: r['train_steps_per_sec'])))" "$gb1" "$gb2")
	printf "  bf16: knlp %.1f steps/s | eager + autocast bf16 %.1f (best of 1 and 2 threads): %sx\n" \
		"$(jq_get "$gk" train_steps_per_sec_bf16)" "$(jq_get "$gb" train_steps_per_sec)" \
		"$(ratio "$(jq_get "$gk" train_steps_per_sec_bf16)" "$(jq_get "$gb" train_steps_per_sec)")"
else
	echo "  bf16: not measured (this CPU has no native bf16: no AVX512-BF16 or AMX-BF16)"
fi
printf '  "gnn": {"knlp": %s, "pytorch": %s, "pytorch_bf16": %s},\n' "$gk" "$gp" "$gb" >>"$res"
fi

if want ddp; then
echo
echo "== Data parallel on the CPU (Gloo): 1 process vs 2 processes of one thread each, same global batch"
K="$BUILD/knlp"
dd=$(mktemp -d)
$PY - "$dd/corpus.txt" <<'PY'
import random, sys
r = random.Random(0)
w = ["page", "kernel", "module", "driver", "buffer", "lock", "task", "memory", "the", "a", "maps", "frees"]
open(sys.argv[1], "w").write(" ".join(r.choice(w) for _ in range(400000)))
PY
"$K" prepare --corpus "$dd/corpus.txt" --out "$dd/data" >/dev/null 2>&1
cat >"$dd/b.config" <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_NUM_THREADS=1
CONFIG_DATA_DIR="$dd/data"
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=4
CONFIG_GPT2_N_HEAD=4
CONFIG_GPT2_N_EMBD=256
CONFIG_GPT2_BLOCK_SIZE=64
CONFIG_GPT2_DROPOUT="0.0"
CONFIG_BATCH_SIZE=4
CONFIG_MAX_ITERS=40
CONFIG_EVAL_INTERVAL=1000
CONFIG_EVAL_SAMPLES=1
CONFIG_LOG_INTERVAL=10
CONFIG_DDP_TIMEOUT=60
# CONFIG_SAMPLE_AT_EVAL is not set
# CONFIG_HW_MONITOR is not set
EOC
export KNLP_PEAK_FLOPS=1e12
"$K" train --config "$dd/b.config" --set GRAD_ACCUM=4 --out "$dd/one" >/dev/null 2>&1
"$K" launch --nproc 2 -- train --config "$dd/b.config" --set DDP=y --set GRAD_ACCUM=2 --out "$dd/two" >/dev/null 2>&1
"$K" launch --nproc 2 -- train --config "$dd/b.config" --set DDP=y --set GRAD_ACCUM=2 --set DDP_OVERLAP=n --out "$dd/two-noov" >/dev/null 2>&1
ddp=$($PY - "$dd" <<'PY'
import json, sys
d = sys.argv[1]
m = {k: json.load(open(f"{d}/{k}/training_metrics.json")) for k in ("one", "two", "two-noov")}
r = {"params": m["one"]["parameters"], "tokens_per_sec_1": m["one"]["tokens_per_second"],
     "tokens_per_sec_2": m["two"]["tokens_per_second"], "tokens_per_sec_2_no_overlap": m["two-noov"]["tokens_per_second"]}
for k in ("two", "two-noov"):
    x = m[k]["ddp"]
    r[k + "_comm_wait_share"] = x["comm_wait_seconds"] / m[k]["total_time"]
    r[k + "_allreduce_mb_per_step"] = x["allreduce_bytes"] / x["syncs"] / 1e6
print(json.dumps(r))
PY
)
rm -rf "$dd"
$PY - "$ddp" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"  {r['params'] / 1e6:.2f}M parameters, {r['two_allreduce_mb_per_step']:.1f} MB all-reduced per step")
print(f"  1 process: {r['tokens_per_sec_1']:.0f} tok/s; 2 processes: {r['tokens_per_sec_2']:.0f} tok/s "
      f"(scaling efficiency {r['tokens_per_sec_2'] / (2 * r['tokens_per_sec_1']):.2f}); without overlap "
      f"{r['tokens_per_sec_2_no_overlap']:.0f} tok/s")
print(f"  waiting for the all-reduce after the backward pass: {100 * r['two_comm_wait_share']:.1f}% of the run with overlap, "
      f"{100 * r['two-noov_comm_wait_share']:.1f}% without")
PY
printf '  "ddp": %s,\n' "$ddp" >>"$res"
fi

if want hf; then
echo
echo "== A Qwen2.5-0.5B-shaped Hugging Face folder (random bf16 weights, tied): eval of 4 windows of 512 tokens,"
echo "   knlp vs an eager PyTorch forward (scripts/ref/llama_eager.py, float32, same windows), same threads"
hf=$(mktemp -d)
$PY "$top/scripts/ref/hf_random_model.py" "$hf/m" --arch qwen2 --dtype bf16 --hidden 896 --heads 14 --kv-heads 2 \
	--inter 4864 --layers 24 --vocab 151936 --ctx 32768 --tied --mild --tokenizer "$top/datasets/tokenizers/qwen3" >/dev/null
mkdir -p "$hf/c" && for f in /usr/share/doc/linux-doc-6.1/Documentation/process/*.rst.gz; do zcat "$f" >"$hf/c/$(basename "$f" .gz)"; done
"$BUILD/knlp" prepare --corpus "$hf/c" --tokenizer "$hf/m" --out "$hf/full" >/dev/null 2>&1
mkdir -p "$hf/d" && cp "$hf/full/meta.json" "$hf/d/" && head -c $((4 * (4 * 512 + 1))) "$hf/full/val.bin" >"$hf/d/val.bin"
wbytes=$(stat -c %s "$hf/m/model.safetensors")
k=$("$BUILD/knlp" eval --checkpoint "$hf/m" --data "$hf/d" --ctx 512 --batch 4 2>/dev/null | tail -1)
p=$(OMP_NUM_THREADS=$(nproc) $PY "$top/scripts/ref/llama_eager.py" "$hf/m" "$hf/d/val.bin" 512 4)
ks=$(jq_get "$k" seconds); ps=$(jq_get "$p" seconds); krss=$(jq_get "$k" peak_rss_bytes); prss=$(jq_get "$p" peak_rss_bytes)
printf "  knlp %.1f s (%s tokens, loss %.6f), eager PyTorch %.1f s (loss %.6f): knlp %sx faster\n" "$ks" "$(jq_get "$k" tokens)" \
	"$(jq_get "$k" val_loss)" "$ps" "$(jq_get "$p" val_loss)" "$(ratio "$ps" "$ks")"
printf "  peak memory: knlp %.2f GB = %sx the weights' %.2f GB (bf16, mapped); eager PyTorch %.2f GB (float32 copies)\n" \
	"$($PY -c "print($krss/1e9)")" "$(ratio "$krss" "$wbytes")" "$($PY -c "print($wbytes/1e9)")" "$($PY -c "print($prss/1e9)")"
printf '  "hf_qwen2_05b_eval": {"knlp": %s, "eager": %s, "weight_bytes": %s},\n' "$k" "$p" "$wbytes" >>"$res"
echo "   Fisher scoring (empirical diagonal, 2 windows of 512 tokens of the training split): knlp fim score (gradient"
echo "   taps on the mapped bf16 weights) vs eager PyTorch autograd on float32 copies, squared gradients summed"
"$BUILD/knlp" fim score --checkpoint "$hf/m" --data "$hf/full" --split train --kind empirical --chunks 2 --seq 512 \
	--out "$hf/fim" >"$hf/fim.log" 2>&1
p=$(OMP_NUM_THREADS=$(nproc) $PY "$top/scripts/ref/llama_eager.py" "$hf/m" "$hf/full/train.bin" 512 4 --fisher 2)
f=$($PY - "$hf/fim/fim.json" "$p" <<'PY'
import json, sys
f, e = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
mine = {t["name"]: t["empirical"]["mean"] for t in f["tensors"]}
worst = max(abs(mine[k] - v) / abs(v) for k, v in e["means"].items())
print(json.dumps({"knlp_seconds": f["seconds"], "eager_seconds": e["seconds"], "knlp_peak_rss_bytes": f["peak_rss_bytes"],
                  "eager_peak_rss_bytes": e["peak_rss_bytes"], "max_rel_diff_of_tensor_means": worst,
                  "knlp_loss": f["mean_loss"], "eager_loss": e["mean_loss"]}))
PY
)
printf "  knlp %.1f s, eager PyTorch %.1f s: knlp %sx faster; peak memory knlp %.2f GB, eager %.2f GB; tensor means agree to %.1e\n" \
	"$(jq_get "$f" knlp_seconds)" "$(jq_get "$f" eager_seconds)" "$(ratio "$(jq_get "$f" eager_seconds)" "$(jq_get "$f" knlp_seconds)")" \
	"$($PY -c "print($(jq_get "$f" knlp_peak_rss_bytes)/1e9)")" "$($PY -c "print($(jq_get "$f" eager_peak_rss_bytes)/1e9)")" \
	"$(jq_get "$f" max_rel_diff_of_tensor_means)"
printf '  "hf_qwen2_05b_fisher": %s,\n' "$f" >>"$res"
rm -rf "$hf"
fi

if want tokenize; then
echo
echo "== Tokenizers on the default corpus (one thread) vs the JavaScript GPT-2 encoder"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
DOC=/usr/share/doc/linux-doc-6.1/Documentation
i=0
find "$DOC" -type f \( -name '*.rst.gz' -o -name '*.txt.gz' -o -name '*.md.gz' \) | LC_ALL=C sort | while read -r f; do
	zcat "$f" >"$tmp/$(printf %05d $i).txt"; i=$((i + 1))
done
files=$(ls "$tmp"/*.txt)
gb=$("$B" tokenize --dump "$tmp/cpp.out" gpt2 $files)
bb=$("$B" tokenize byte $files)
js=$(node "$top/scripts/ref/gpt2_encode.js" "$top/datasets/gpt2" $files 2>"$tmp/js.time" >"$tmp/js.out"; cat "$tmp/js.time")
jsmb=$($PY -c "import json; d=json.loads('''$js'''); print(d['bytes']/1e6/d['seconds'])")
# Agreement, file by file, over the whole corpus.
total=$(wc -l <"$tmp/js.out")
agree=$(paste -d'\t' "$tmp/js.out" "$tmp/cpp.out" | awk -F'\t' '$1 == $2' | wc -l)
printf "  gpt2: knlp %.1f MB/s, JavaScript %.2f MB/s: %sx; byte: %.0f MB/s\n" "$(jq_get "$gb" mb_per_sec)" "$jsmb" \
	"$(ratio "$(jq_get "$gb" mb_per_sec)" "$jsmb")" "$(jq_get "$bb" mb_per_sec)"
echo "  agreement with the JavaScript encoder: $agree of $total files token-for-token identical"
printf '  "tokenize": {"gpt2": %s, "byte": %s, "javascript_mb_per_sec": %s, "files_identical": %s, "files": %s},\n' \
	"$gb" "$bb" "$jsmb" "$agree" "$total" >>"$res"
echo
echo "== tokenizer.json (Hugging Face's format) on the default corpus, one thread: knlp vs Hugging Face's"
echo "   tokenizers (its Rust implementation through the npm package @anush008/tokenizers)"
printf '  "tokenizer_json": {' >>"$res"
sep=
for m in qwen3 llama3 gpt2; do
	dir="$top/datasets/tokenizers/$m"
	"$BUILD/knlp" encode --tokenizer "$dir" --corpus linux-doc >"$tmp/$m.lines" 2>"$tmp/$m.err"
	kmb=$(sed -n 's/.*(\([0-9.]*\) MB\/s, one thread).*/\1/p' "$tmp/$m.err")
	hf=$(KNLP_TOKENIZERS_NPM="$top/datasets/tokenizers" node "$top/scripts/ref/hf_tokenize_check.js" "$dir/tokenizer.json" "$DOC" "$tmp/$m.lines")
	hmb=$($PY -c "import json,sys; d=json.loads(sys.argv[1]); print(d['bytes']/1e6/d['seconds'])" "$hf")
	mism=$(jq_get "$hf" mismatches); docs=$(jq_get "$hf" documents)
	printf "  %-7s knlp %5.1f MB/s, Hugging Face %4.2f MB/s: %sx; %s of %s documents differ\n" "$m" "$kmb" "$hmb" \
		"$(ratio "$kmb" "$hmb")" "$mism" "$docs"
	printf '%s"%s": {"knlp_mb_per_sec": %s, "hf_mb_per_sec": %s, "documents": %s, "mismatches": %s}' "$sep" "$m" \
		"$kmb" "$hmb" "$docs" "$mism" >>"$res"
	sep=", "
done
printf '},\n' >>"$res"
fi
echo '  "done": true' >>"$res"
echo "}" >>"$res"
echo
echo "results: $res"
