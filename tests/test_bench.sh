#!/bin/bash
# knlp_bench, where every published speed figure comes from (scripts/bench.sh), at shapes
# small enough for seconds: each mode make bench uses runs, reports what it measured and the
# counts that follow from the shape; bad arguments are refused. Speed itself is never
# asserted here (docs/performance.md: ratios from make bench only).
. "$(dirname "$0")/lib.sh"
B=$(dirname "$KNLP")/knlp_bench
[ -x "$B" ] || { echo "FAIL: $B is not built"; exit 1; }
check() { # check NAME JSON PYTHON-EXPRESSION-ON-j
	if $PYTHON -c "import json, math, sys; j = json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$2" 2>/dev/null; then
		ok
	else
		bad "$1: $2"
	fi
}
# GPT-2 step, L2 H2 C32 T16 B2 V256: 8192 + 512 (embeddings) + 2 x 12704 (blocks) + 64 (ln_f)
t=$("$B" train 2 2 32 16 2 256 3)
check train "$t" "j['params'] == 34176 and j['tokens_per_sec'] > 0 and 0 < j['mfu'] < 2 and j['peak_gflops'] > 0"
t=$(KNLP_BENCH_OFF=head,attention,layernorm,gelu "$B" train 2 2 32 16 2 256 3)
check "train, fusions off" "$t" "j['off'] == 'head,attention,layernorm,gelu' and j['tokens_per_sec'] > 0"
t=$(KNLP_BENCH_OFF=gemm "$B" train 2 2 32 16 2 256 2)
check "train, knlp's GEMM off" "$t" "j['gemm'].startswith('blas') and j['tokens_per_sec'] > 0"
# The products of one layer at batch 2, 16 tokens, 32 channels: 3 per linear, M = 32 rows
# One bf16 product with a cold float32 B (where the CPU has AVX512-BF16; refused elsewhere)
if grep -qw avx512_bf16 /proc/cpuinfo; then
	p=$("$B" product 0 1 40 100 70 1 0 3)
	check product "$p" "j['m'] == 40 and j['n'] == 100 and j['k'] == 70 and j['tb'] and j['a_bf16'] and not j['c_bf16'] and j['b_copies'] >= 2 and j['knlp_gflops'] > 0 and j['libtorch_gflops'] > 0"
else
	"$B" product 0 1 40 100 70 1 0 3 >/dev/null 2>&1
	[ $? = 3 ] && ok || bad "product on a CPU without AVX512-BF16 must exit 3"
fi
"$B" product 0 1 0 100 70 1 0 3 >/dev/null 2>&1
[ $? = 2 ] && ok || bad "product with M 0 must exit 2"
g=$("$B" gemm 2 16 32 2)
check gemm "$g" "len(j['products']) == 12 and j['products'][0]['m'] == 32 and j['products'][0]['n'] == 96 and j['products'][2]['k'] == 32 and j['products'][11]['n'] == 128 and all(p['knlp_gflops'] > 0 and p['libtorch_gflops'] > 0 for p in j['products'])"
k=$("$B" kernels 2 128 64 2 2)
check kernels "$k" "all(j[n]['fused_ms'] > 0 and j[n]['unfused_ms'] > 0 for n in ('attention', 'bias_gelu', 'add_layernorm', 'cross_entropy', 'head_vocab_blocks')) and j['cross_entropy']['vocab'] == 50304 and j['head_vocab_blocks']['block'] == 336"
# MLA caches a latent of C/2 per token and layer: 16 x 2 layers
a=$("$B" attention mla 2 2 32 2 2)
check attention "$a" "j['variant'] == 'mla' and j['cache_values_per_token'] == 32 and j['train_tokens_per_sec'] > 0 and j['decode_tokens_per_sec'] > 0"
g=$("$B" gnn 20000)
check gnn "$g" "j['nodes'] == 20000 and j['train_steps_per_sec'] > 0 and j['batch_nodes'] > 0 and set(j['sampler']) == {'neighbor', 'page', 'fim'}"
# make bench runs scripts/bench.sh (bash); the Makefile's `sh` scripts must parse under
# Debian's sh (dash), which a bash-only construct breaks (bench.sh under sh once did).
bash -n "$TOP/scripts/bench.sh" && grep -q "bash scripts/bench.sh" "$TOP/Makefile" && ok || bad "make bench does not run bench.sh with bash, or it does not parse"
if command -v dash >/dev/null; then
	for s in $(sed -n 's/.*[^a-z]sh scripts\/\([a-z_]*\.sh\).*/\1/p' "$TOP/Makefile"); do
		dash -n "$TOP/scripts/$s" && ok || bad "scripts/$s does not parse under dash, yet the Makefile runs it with sh"
	done
fi
expect_fail "knlp_bench: bad arguments" "$B" train 1 2
expect_fail "knlp_bench: bad arguments" "$B" no-such-mode
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
