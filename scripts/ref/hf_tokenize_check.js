// Hugging Face's own tokenizers library (its Rust implementation, through the npm package
// @anush008/tokenizers) against knlp's encoding of the same documents.
//   node hf_tokenize_check.js TOKENIZER_JSON CORPUS_ROOT KNLP_LINES
// KNLP_LINES holds `knlp encode --corpus` output (path<TAB>[ids] per document). Documents that
// are not valid UTF-8 are skipped and counted (a JavaScript string cannot hold them). Prints
// one JSON line: documents compared, skipped, mismatches (with the first few), and the
// binding's single-thread encoding time. KNLP_EVERY=n checks every n-th document only.
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const readline = require('readline');
const [tokjson, root, lines] = process.argv.slice(2);
const modroot = process.env.KNLP_TOKENIZERS_NPM;
const { Tokenizer } = require(path.join(modroot, 'node_modules/@anush008/tokenizers'));

(async () => {
	const tok = Tokenizer.fromFile(tokjson);
	const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
	const rl = readline.createInterface({ input: fs.createReadStream(lines), crlfDelay: Infinity });
	let docs = 0, skipped = 0, bytes = 0, tokens = 0, seconds = 0, line_no = 0;
	const every = Number(process.env.KNLP_EVERY || 1);
	const mismatches = [];
	for await (const line of rl) {
		if (line_no++ % every)
			continue;
		const tab = line.indexOf('\t');
		const rel = line.slice(0, tab);
		const want = JSON.parse(line.slice(tab + 1));
		let buf = fs.readFileSync(path.join(root, rel));
		if (rel.endsWith('.gz'))
			buf = zlib.gunzipSync(buf);
		let text;
		try {
			text = decoder.decode(buf);
		} catch (e) {
			skipped++;
			continue;
		}
		const t0 = process.hrtime.bigint();
		const enc = await tok.encode(text, null, { addSpecialTokens: false });
		const ids = enc.getIds();
		seconds += Number(process.hrtime.bigint() - t0) / 1e9;
		docs++;
		bytes += buf.length;
		tokens += ids.length;
		let i = 0;
		while (i < ids.length && i < want.length && ids[i] === want[i])
			i++;
		if (i < ids.length || i < want.length)
			mismatches.push({ file: rel, at: i, hf: ids.slice(i, i + 8), knlp: want.slice(i, i + 8),
					  hf_len: ids.length, knlp_len: want.length });
	}
	console.log(JSON.stringify({ documents: docs, skipped, bytes, tokens, seconds,
				     mismatches: mismatches.length, first: mismatches.slice(0, 5) }));
})().catch(e => { console.error(e); process.exit(1); });
