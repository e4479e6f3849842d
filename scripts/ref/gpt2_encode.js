// Reference encoder for the parity tests: the JavaScript GPT-2 encoder of the npm package
// gpt-3-encoder. Usage: node gpt2_encode.js VOCAB_DIR FILE...  (prints one JSON array of
// ids per file, one per line; the file's bytes are read as UTF-8).
'use strict';
const path = require('path');
const fs = require('fs');
const enc = require(path.resolve(process.argv[2], 'Encoder.js'));
let bytes = 0;
const t0 = process.hrtime.bigint();
for (const f of process.argv.slice(3)) {
  const text = fs.readFileSync(f, 'utf8');
  bytes += Buffer.byteLength(text, 'utf8');
  process.stdout.write(JSON.stringify(enc.encode(text)) + '\n');
}
const secs = Number(process.hrtime.bigint() - t0) / 1e9;
process.stderr.write(JSON.stringify({bytes: bytes, seconds: secs}) + '\n');
