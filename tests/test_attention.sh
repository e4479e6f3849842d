#!/bin/bash
# Attention variants from the command line: the kvcache table, measured = analytic cache
# bytes during `knlp sample`, the Fisher spectrum tool and Fisher-guided placement, cloze
# sets and `knlp eval --task hellaswag`, the variant axis of matrices, and bad input.
. "$(dirname "$0")/lib.sh"
cd "$T"

cycle_data data || { bad "prepare"; finish; exit 1; }
cat >a.config <<EOC
CONFIG_DEVICE_CPU=y
CONFIG_DATA_DIR="$T/data"
CONFIG_GPT2_SIZE_CUSTOM=y
CONFIG_GPT2_N_LAYER=3
CONFIG_GPT2_N_HEAD=2
CONFIG_GPT2_N_EMBD=32
CONFIG_GPT2_BLOCK_SIZE=32
CONFIG_GPT2_MLA_D_LATENT=16
CONFIG_GPT2_KVSPLICE_DIM=8
CONFIG_GPT2_DROPOUT="0.0"
CONFIG_BATCH_SIZE=8
CONFIG_MAX_ITERS=10
CONFIG_WARMUP_ITERS=5
CONFIG_LEARNING_RATE="3e-3"
CONFIG_EVAL_INTERVAL=10
CONFIG_EVAL_SAMPLES=2
# CONFIG_SAMPLE_AT_EVAL is not set
EOC

# 124M shapes: the table the original published (12 layers, 1024 tokens, fp16).
cat >big.config <<EOC
CONFIG_GPT2_SIZE_124M=y
CONFIG_GPT2_BLOCK_SIZE=1024
CONFIG_GPT2_MLA_D_LATENT=256
CONFIG_GPT2_KVSPLICE_DIM=128
CONFIG_GPT2_VOCAB_SIZE=50257
CONFIG_DATA_DIR="$T/nowhere"
EOC
out=$("$KNLP" kvcache --config big.config --memory-gib 80)
echo "$out" | grep -Eq '^vanilla +18432 +1536 +36864 +36\.00 +1\.00x +2275 ' && ok || bad "kvcache vanilla row: $out"
echo "$out" | grep -Eq '^mla +3072 +256 +6144 +6\.00 +6\.00x' && ok || bad "kvcache mla row"
echo "$out" | grep -Eq '^kvsplice +1536 +128 +3072 +3\.00 +12\.00x' && ok || bad "kvcache kvsplice row"
echo "$out" | grep -Eq '^hybrid-last +2560 +mixed +5120 +5\.00 +7\.20x' && ok || bad "kvcache hybrid row"
echo "$out" | grep -Eq '^vanilla .*<- this configuration' && ok || bad "kvcache marks the configuration"
"$KNLP" kvcache --config big.config --set GPT2_ATTN_HYBRID=y --set GPT2_HYBRID_FIRST=y | grep -Eq '^hybrid-first .*<- this' \
	&& ok || bad "kvcache marks hybrid-first"

# Every variant trains, samples with a cache whose measured size equals the analytic one.
for v in VANILLA MLA KVSPLICE HYBRID RA SDPA_GATE RA_GATE; do
	"$KNLP" train --config a.config --set GPT2_ATTN_$v=y --out run_$v >log_$v 2>&1 || { bad "train $v: $(tail -2 log_$v)"; continue; }
	grep -q '"attention"' run_$v/training_metrics.json && ok || bad "$v: attention not recorded"
	# The Fisher spectrum is logged at each evaluation: layers {0, 1, 2} of 3, traces in (0, 1).
	$PYTHON - run_$v/metrics.jsonl <<'PY' && ok || bad "$v: attention_fisher not logged at eval"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' in l]
assert len(ev) == 2, ev
for e in ev:
    assert [l["layer"] for l in e["attention_fisher"]] == [0, 1, 2]
    assert all(0 < l["trace"] < 1 and l["energy8"] <= l["energy16"] for l in e["attention_fisher"])
PY
	s=$("$KNLP" sample --checkpoint run_$v --prompt "the driver" --tokens 12 2>&1 >/dev/null)
	m=$(echo "$s" | sed -n 's/.*measured \([0-9]*\) bytes, analytic \([0-9]*\) bytes.*/\1 \2/p')
	set -- $m
	if [ -n "$m" ] && [ "$1" = "$2" ] && [ "$1" -gt 0 ]; then ok; else bad "$v: cache bytes: $s"; fi
done
# 21 cached tokens (10-byte prompt + 11) x 3 layers x 64 values x 4 bytes for vanilla.
"$KNLP" sample --checkpoint run_VANILLA --prompt "the driver" --tokens 12 2>&1 >/dev/null | grep -q "measured 16128 bytes" \
	&& ok || bad "vanilla cache bytes by hand"
expect_fail "only vanilla attention" "$KNLP" export --checkpoint run_MLA --out hf

# Fisher spectrum on held-out data, and a hybrid placed by it.
"$KNLP" fim attention --checkpoint run_MLA --layers all --out fim.json >fim.txt 2>&1 && ok || bad "fim attention: $(tail -2 fim.txt)"
$PYTHON - fim.json <<'PY' && ok || bad "fim.json content"
import json, sys
j = json.load(open(sys.argv[1]))
assert [l["layer"] for l in j["layers"]] == [0, 1, 2]
for l in j["layers"]:
    assert len(l["heads"]) == 2 and 0 < l["trace"] < 1
    for h in l["heads"]:
        assert len(h["top8"]) == 8 and h["top8"] == sorted(h["top8"], reverse=True)
        assert 0 < h["energy8"] <= h["energy16"] <= 1 + 1e-9
PY
"$KNLP" fim attention --checkpoint run_MLA | grep -c '^ *[0-9]\+ \+[01] ' | grep -qx 6 && ok || bad "spec layers {0, 1, 2} x 2 heads"
"$KNLP" train --config a.config --set GPT2_ATTN_HYBRID=y --set GPT2_HYBRID_FISHER=y --set GPT2_HYBRID_LAYERS=1 \
	--set "GPT2_HYBRID_FISHER_FILE=\"$T/fim.json\"" --set MAX_ITERS=2 --out run_fisher >log_f 2>&1 && ok || bad "fisher placement: $(tail -2 log_f)"
low=$($PYTHON -c "import json; j=json.load(open('fim.json')); print(min(j['layers'], key=lambda l: l['trace'])['layer'])")
grep -q "transformer.h.$low.attn.splice.weight" run_fisher/checkpoints/*/model.safetensors && ok || bad "KVSplice not on the lowest-trace layer $low"

# Cloze set + HellaSwag scoring: a trained model beats chance by far.
"$KNLP" train --config a.config --set GPT2_ATTN_HYBRID=y --set MAX_ITERS=300 --set EVAL_INTERVAL=300 --out run_long >log_l 2>&1 \
	|| bad "train long: $(tail -2 log_l)"
"$KNLP" cloze --data data --out cloze.jsonl --count 40 --ctx-tokens 24 --ending-tokens 8 --seed 3 >/dev/null && ok || bad "cloze"
[ "$(wc -l <cloze.jsonl)" = 40 ] && ok || bad "cloze line count"
r=$("$KNLP" eval --checkpoint run_long --task hellaswag --data cloze.jsonl 2>/dev/null)
acc=$(echo "$r" | sed -n 's/.*"acc": \([0-9.]*\).*/\1/p')
$PYTHON -c "import sys; sys.exit(0 if float('$acc') >= 0.9 else 1)" && ok || bad "cloze accuracy $acc (chance 0.25): $r"
# A cloze set from (a slice of) the default corpus: HellaSwag fields, endings at word
# boundaries, distinct, the label in range.
D=/usr/share/doc/linux-doc-6.1/Documentation/admin-guide/sysctl
if [ -d "$D" ]; then
	"$KNLP" prepare --corpus "$D" --out doc >/dev/null 2>&1 || bad "prepare a slice of the default corpus"
	"$KNLP" cloze --data doc --out doc.jsonl --count 50 --seed 2 >/dev/null && ok || bad "cloze from the default corpus"
	$PYTHON - doc.jsonl <<'PY' && ok || bad "default-corpus cloze items malformed"
import json, sys
items = [json.loads(l) for l in open(sys.argv[1])]
assert len(items) == 50
for it in items:
    e = it["endings"]
    assert len(e) == 4 and len(set(e)) == 4 and 0 <= it["label"] < 4 and it["ctx"]
    assert all(x[:1].isspace() for x in e), e
PY
fi
printf '{"ctx": "a", "endings": ["b", "c"], "label": 0}\n{"ctx": "a", "endings": ["b", "c"], "label": 0\n' >bad.jsonl
expect_fail "bad.jsonl:2: not a JSON object" "$KNLP" eval --checkpoint run_long --task hellaswag --data bad.jsonl
expect_fail "needs --data" "$KNLP" eval --checkpoint run_long --task hellaswag
printf '{"ctx": "a", "endings": ["b", "c"], "label": "4294967296"}\n' >wrap.jsonl
expect_fail "wrap.jsonl:1: label 4294967296 is outside the 2 endings" "$KNLP" eval --checkpoint run_long --task hellaswag --data wrap.jsonl

# Bad shapes fail before training starts (no run folder left behind).
expect_fail "CONFIG_GPT2_RA_LAYERS=4 must be between 1 and CONFIG_GPT2_N_LAYER=3" \
	"$KNLP" train --config a.config --set GPT2_ATTN_RA=y --set GPT2_RA_LAYERS=4 --out bad1
test ! -e bad1 && ok || bad "run folder left after a config error"
expect_fail "not divided evenly" "$KNLP" train --config a.config --set GPT2_ATTN_KVSPLICE=y --set GPT2_MLA_D_LATENT=12 --out bad2
expect_fail "KVSplice on 0 layers" "$KNLP" train --config a.config --set GPT2_ATTN_HYBRID=y --set GPT2_N_LAYER=2 --out bad3
expect_fail "HYBRID_LAYER_LIST: '7' is not a layer index" "$KNLP" train --config a.config --set GPT2_ATTN_HYBRID=y \
	--set GPT2_HYBRID_LIST=y --set 'GPT2_HYBRID_LAYER_LIST="0 7"' --out bad4
expect_fail "unknown attention variant 'mlx'" "$KNLP" matrix --config a.config --set 'GPT2_ATTN_VARIANTS="mla mlx"' --dry-run

# The variant axis of a matrix.
plan=$("$KNLP" matrix --config a.config --set 'GPT2_ATTN_VARIANTS="mla kvsplice hybrid-last hybrid-first"' --dry-run)
for id in gpt2-mla_adamw_none gpt2-kvsplice_adamw_none gpt2-hybrid-last_adamw_none gpt2-hybrid-first_adamw_none; do
	echo "$plan" | grep -q "$id" && ok || bad "matrix plan lacks $id"
done
echo "$plan" | grep -q "^4 runs" && ok || bad "matrix plan count: $plan"
finish
