// Mean next-token loss of a GGUF model computed by llama.cpp itself (the prebuilt CPU
// binaries of the npm package node-llama-cpp), over the same windows `knlp eval` scores:
// windows of T tokens at 0, T, 2T, ... and one aligned to the end of the file whose
// already-scored targets are skipped, so each of the N-1 targets counts once.
//
//   node llama_eval.mjs MODULES_DIR MODEL.gguf VAL.bin T [TOKEN_BYTES]
//
// TOKEN_BYTES: 2 (uint16 .bin, the default) or 4 (uint32, vocabularies above 65,536).
// MODULES_DIR is the node_modules holding node-llama-cpp. Prints one JSON line:
// {"tokens": n, "val_loss": mean nats}. Each window starts from an empty KV cache; the loss
// is a float64 log-softmax of llama.cpp's raw logits over the file's vocabulary (node-llama-cpp's
// own probabilities pass through its sampler and are off by ~2e-4 nats).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [modules, modelPath, valPath, tArg, widthArg] = process.argv.slice(2);
if (!modules || !modelPath || !valPath || !tArg) {
	console.error("usage: node llama_eval.mjs MODULES_DIR MODEL.gguf VAL.bin T");
	process.exit(2);
}
const entry = path.join(modules, "node-llama-cpp", "dist", "index.js");
const { getLlama } = await import(pathToFileURL(entry).href);

const raw = fs.readFileSync(valPath);
const ids = widthArg === "4" ? new Uint32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length))
	: new Uint16Array(raw.buffer, raw.byteOffset, raw.length >> 1);
const N = ids.length;
let T = Number(tArg);
if (T + 1 > N)
	T = N - 1;
const starts = [];
for (let s = 0; s + T + 1 <= N; s += T)
	starts.push(s);
const covered = starts.length ? starts[starts.length - 1] + T : 0;
const tail = covered < N - 1;
if (tail)
	starts.push(N - T - 1);

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
// An f32 KV cache (llama.cpp defaults to f16) and no flash attention: the file's own
// precision. The context holds two windows: node-llama-cpp shifts a full context before the
// last token of a window that fills it exactly, which changes that token's logits.
const context = await model.createContext({
	contextSize: 2 * T, batchSize: T, sequences: 1, threads: 1, flashAttention: false,
	experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const seq = context.getSequence();

let total = 0, count = 0;
for (let w = 0; w < starts.length; w++) {
	const s = starts[w];
	const window = Array.from(ids.subarray(s, s + T));
	await seq.clearHistory();
	const out = await seq.controlledEvaluate(window.map(t => [t, { generateNext: { logits: true } }]));
	for (let t = 0; t < T; t++) {
		if (tail && w === starts.length - 1 && s + t + 1 <= covered)
			continue;
		const logits = out[t]?.next?.logits;
		const target = logits?.get(ids[s + t + 1]);
		if (target === undefined) {
			console.error(`llama_eval: no logit for token ${ids[s + t + 1]} at position ${s + t}`);
			process.exit(1);
		}
		let max = -Infinity, sum = 0;
		for (const v of logits.values())
			if (v > max)
				max = v;
		for (const v of logits.values())
			sum += Math.exp(v - max);
		total += Math.log(sum) + max - target;
		count++;
	}
}
console.log(JSON.stringify({ tokens: count, val_loss: total / count }));
await context.dispose();
await model.dispose();
