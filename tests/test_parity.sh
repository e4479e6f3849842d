#!/bin/bash
# GPT-2 BPE parity with the JavaScript encoder shipped in the npm package gpt-3-encoder:
# token for token on a sample of the default corpus plus hand-made odd Unicode.
. "$(dirname "$0")/lib.sh"
V="$TOP/datasets/gpt2"
[ -f "$V/Encoder.js" ] || { echo "FAIL: $V/Encoder.js missing (make deps)"; exit 1; }
command -v node >/dev/null || { echo "FAIL: node missing (make deps)"; exit 1; }
DOC=/usr/share/doc/linux-doc-6.1/Documentation
i=0
# Every 97th file of the sorted corpus (about 50 files from all over the tree).
find "$DOC" -type f \( -name '*.rst.gz' -o -name '*.txt.gz' -o -name '*.rst' -o -name '*.txt' \) | LC_ALL=C sort |
	awk 'NR % 97 == 1' | while read -r f; do
	case "$f" in *.gz) zcat "$f" ;; *) cat "$f" ;; esac >"$T/doc$(printf %03d $i).txt"
	i=$((i + 1))
done
printf "Hello world! It's   a test\n\n  of ünïcödé 123 4567 — “quotes” 日本語テキスト 🙂🙂 's 'S 'll x'd\t\tend  " >"$T/odd1.txt"
printf 'Ｆｕｌｌｗｉｄｔｈ ١٢٣ ½ Ⅻ αβγ ΑΒΓ ñ Ω\r\n\u200b zero\u2028width  \u00a0nbsp\u3000ideo tab\t\t\n\n\n  \n x' >"$T/odd2.txt"
printf '   leading spaces and trailing   \n\n\n' >"$T/odd3.txt"
printf "can't won't y'all ''quoted'' 'tis O'Neil's 1,000,000.50 3.14e-10 <|endoftext|> a\u0301 e\u0308" >"$T/odd4.txt"
files=$(ls "$T"/*.txt)
node "$TOP/scripts/ref/gpt2_encode.js" "$V" $files >"$T/js.out" 2>/dev/null || { echo "FAIL: node encoder"; exit 1; }
# One process for every file: the vocabulary loads once, and the lines line up with node's.
"$KNLP" encode --vocab-dir "$V" $files >"$T/knlp.out" 2>"$T/knlp.err" || bad "knlp encode: $(cat "$T/knlp.err")"
n=0
for f in $files; do
	n=$((n + 1))
	[ "$(sed -n "${n}p" "$T/js.out")" = "$(sed -n "${n}p" "$T/knlp.out")" ] && ok || bad "token mismatch on $(basename "$f")"
done
[ "$(wc -l <"$T/knlp.out")" = "$n" ] && ok || bad "knlp encode printed $(wc -l <"$T/knlp.out") lines for $n files"
# Standard input gives the same ids, one per line.
want=$(sed -n 1p "$T/knlp.out")
got="[$("$KNLP" encode --vocab-dir "$V" <"$(echo $files | cut -d' ' -f1)" | paste -sd, -)]"
[ "$want" = "$got" ] && ok || bad "standard input and file arguments disagree"
expect_fail "nope.txt: cannot read" "$KNLP" encode --vocab-dir "$V" "$T/nope.txt"
[ "$n" -ge 40 ] && ok || bad "only $n files compared"
finish
