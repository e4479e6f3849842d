#!/bin/bash
# tokenizer.json parity with Hugging Face's own tokenizers library (its Rust implementation,
# npm package @anush008/tokenizers): Qwen3's tokenizer (NFC, the Qwen2 pattern with its
# case-insensitive contractions, 26 added tokens), Llama-3's (three-digit groups,
# ignore_merges, 256 added tokens) and GPT-2's, token for token over the whole
# Linux documentation corpus and hand-made odd Unicode; `knlp prepare` with a tokenizer.json
# (uint32 token files); the one-line errors for what knlp does not implement.
. "$(dirname "$0")/lib.sh"
TOKZ="$TOP/datasets/tokenizers"
for m in qwen3 gpt2 llama3; do
	[ -s "$TOKZ/$m/tokenizer.json" ] || { echo "FAIL: $TOKZ/$m/tokenizer.json missing (make deps)"; exit 1; }
done
[ -d "$TOKZ/node_modules/@anush008/tokenizers" ] || { echo "FAIL: @anush008/tokenizers missing (make deps)"; exit 1; }
export KNLP_TOKENIZERS_NPM="$TOKZ"
check() { # check NAME TOKENIZER CORPUS: knlp's lines against the library's
	"$KNLP" encode --tokenizer "$2" --corpus "$3" >"$T/$1.lines" 2>"$T/$1.err" || { bad "knlp encode $1: $(cat "$T/$1.err")"; return; }
	node "$TOP/scripts/ref/hf_tokenize_check.js" "$2/tokenizer.json" "$(cat "$T/root")" "$T/$1.lines" >"$T/$1.json" ||
		{ bad "hf check $1"; return; }
	$PYTHON - "$T/$1.json" "$1" "$4" <<'PY' && ok || bad "$1: $(cut -c1-600 "$T/$1.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["mismatches"] == 0 and r["skipped"] == 0, r
assert r["documents"] >= int(sys.argv[3]), r
PY
}

# Hand-made odd text: NFC compositions and reorderings (Hangul, stacked marks, singletons,
# composition exclusions), upper-case and long-s contractions, U+0085 and U+FEFF (whitespace
# and not, to the library's regex engine), added tokens in running text, CRLF, digit runs.
mkdir -p "$T/odd"
printf "Hello world! It's   a test\n\n  of ünïcödé 123 4567 — “quotes” 日本語テキスト 🙂🙂 's 'S 'll x'd\t\tend  " >"$T/odd/odd1.txt"
printf 'Ｆｕｌｌｗｉｄｔｈ ١٢٣ ½ Ⅻ αβγ ΑΒΓ ñ Ω\r\n\u200b zero\u2028width  \u00a0nbsp\u3000ideo tab\t\t\n\n\n  \n x' >"$T/odd/odd2.txt"
printf "   leading spaces and trailing   \n\n\n" >"$T/odd/odd3.txt"
printf "can't WON'T Y'ALL I'M WE'VE SHE'D THEY'LL ''quoted'' 'tis O'Neil's 1,000,000.50 3.14e-10 <|endoftext|> a\u0301 e\u0308 A\u030a\u0323 \u1100\u1161\u11a8 \u212b \u0344 x'\u017f 'ſt" >"$T/odd/odd4.txt"
printf "a\u0085b c\ufeffd \u0085\u0085x <|im_start|>user\nhi<|im_end|>\n<think></think> <|fim_prefix|>x<|fim_suffix|>y<|fim_middle|> <tool_call><tool_call>\r\n\r\n  \r\n(hello) [world] {x}\t\tfoo\n\n\tbar ...\n\n!!!\n\n 12345678901 ١٢٣٤٥" >"$T/odd/odd5.txt"
printf "\u0915\u094d\u0937 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u1e0b\u0323 \u1e0d\u0307 q\u0307\u0323 \ufb01 \u2126 \u00c5 \u0041\u030a\u0301 \U0001d15e \U0001F468\u200d\U0001F469\u200d\U0001F467 a\u0300\u0300\u0300\u0316" >"$T/odd/odd6.txt"
printf '\xef\xbb\xbfA document that starts with a byte-order mark\n' >"$T/odd/odd7.txt"
printf "<|begin_of_text|>Llama-3's added tokens<|eot_id|> <|start_header_id|>x<|end_header_id|>\n\n1 12 123 1234 12345 123456 ١٢٣٤ don'T" >"$T/odd/odd8.txt"
echo "$T/odd" >"$T/root"
check qwen3-odd "$TOKZ/qwen3" "$T/odd" 8
check gpt2-odd "$TOKZ/gpt2" "$T/odd" 8
check llama3-odd "$TOKZ/llama3" "$T/odd" 8
# The whole Linux documentation corpus (5,127 documents, 28.6 MB) for Qwen3's and GPT-2's.
echo /usr/share/doc/linux-doc-6.1/Documentation >"$T/root"
check qwen3-linux "$TOKZ/qwen3" linux-doc 5000
check gpt2-linux "$TOKZ/gpt2" linux-doc 5000
KNLP_EVERY=4 check llama3-linux "$TOKZ/llama3" linux-doc 1200 # a quarter of the documents

# knlp prepare with a tokenizer.json: uint32 token files (Qwen's 151,669 ids), meta.json says
# so, and the tokens are the documents' encodings joined by <|endoftext|>.
"$KNLP" prepare --corpus "$T/odd" --tokenizer "$TOKZ/qwen3" --out "$T/q" --val-percent 20 >"$T/prep.out" 2>&1 ||
	bad "prepare: $(cat "$T/prep.out")"
$PYTHON - "$T/q" "$T/qwen3-odd.lines" "$TOKZ/qwen3" <<'PY' && ok || bad "prepared qwen3 tokens differ"
import json, os, struct, sys
d, lines, tok = sys.argv[1:]
m = json.load(open(f"{d}/meta.json"))
assert m["token_bytes"] == 4 and m["format"] == "uint32-le" and m["vocab_size"] == 151669, m
assert m["eot_token"] == 151643 and m["tokenizer"] == os.path.abspath(tok), m
want = []
for line in open(lines):
    want += json.loads(line.split("\t", 1)[1]) + [151643]
raw = open(f"{d}/train.bin", "rb").read() + open(f"{d}/val.bin", "rb").read()
got = list(struct.unpack(f"<{len(raw) // 4}I", raw))
assert got == want, (len(got), len(want))
assert m["train_tokens"] + m["val_tokens"] == len(want)
PY
# GPT-2's tokenizer.json has 50,257 ids: uint16 files, as before.
"$KNLP" prepare --corpus "$T/odd" --tokenizer "$TOKZ/gpt2" --out "$T/g" >/dev/null 2>&1 || bad "prepare gpt2"
grep -q '"token_bytes": 2' "$T/g/meta.json" && ok || bad "gpt2 tokenizer.json: not uint16"

# What knlp does not implement is a one-line error naming it.
mk() { # mk NAME PYTHON-EXPRESSION-ON-j
	mkdir -p "$T/bad/$1"
	$PYTHON -c "import json,sys; j=json.load(open(sys.argv[1])); $2; json.dump(j, open(sys.argv[2], 'w'))" \
		"$TOKZ/gpt2/tokenizer.json" "$T/bad/$1/tokenizer.json"
}
mk nfkc 'j["normalizer"] = {"type": "NFKC"}'
expect_fail "normalizer 'NFKC' is not implemented (knlp implements NFC)" "$KNLP" encode --tokenizer "$T/bad/nfkc" "$T/odd/odd1.txt"
mk wp 'j["model"]["type"] = "WordPiece"'
expect_fail "tokenizer model 'WordPiece' is not supported (knlp supports byte-level BPE)" "$KNLP" encode --tokenizer "$T/bad/wp" "$T/odd/odd1.txt"
mk fallback 'j["model"]["byte_fallback"] = True'
expect_fail "BPE with byte_fallback (SentencePiece-style) is not supported" "$KNLP" encode --tokenizer "$T/bad/fallback" "$T/odd/odd1.txt"
mk pattern 'j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": False}, {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}'
expect_fail 'pre-tokenizer pattern "\\w+" is not implemented' "$KNLP" encode --tokenizer "$T/bad/pattern" "$T/odd/odd1.txt"
mk meta 'j["pre_tokenizer"] = {"type": "Metaspace"}'
expect_fail "pre_tokenizer 'Metaspace' is not implemented" "$KNLP" encode --tokenizer "$T/bad/meta" "$T/odd/odd1.txt"
mk gap 'del j["model"]["vocab"]["!"]'
expect_fail "the single-byte token for byte 33 is missing" "$KNLP" encode --tokenizer "$T/bad/gap" "$T/odd/odd1.txt"
mkdir -p "$T/bad/trunc" && head -c 5000 "$TOKZ/gpt2/tokenizer.json" >"$T/bad/trunc/tokenizer.json"
expect_fail "trunc/tokenizer.json: malformed JSON" "$KNLP" encode --tokenizer "$T/bad/trunc" "$T/odd/odd1.txt"
# A failed preparation leaves no meta.json behind.
expect_fail "normalizer 'NFKC'" "$KNLP" prepare --corpus "$T/odd" --tokenizer "$T/bad/nfkc" --out "$T/badprep"
[ ! -e "$T/badprep/meta.json" ] && ok || bad "failed prepare wrote meta.json"
finish
