// llama.cpp's tokenization (node-llama-cpp's prebuilt CPU binaries) with a GGUF file's own
// vocabulary, one text file at a time: one line per file, a JSON array of ids. Text that
// names special tokens is tokenized as plain text when SPECIAL is "plain", to the special
// tokens when it is "special".
//   node llama_tokenize.mjs MODULES_DIR MODEL.gguf SPECIAL FILE...
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [modules, modelPath, special, ...files] = process.argv.slice(2);
const entry = path.join(modules, "node-llama-cpp", "dist", "index.js");
const { getLlama } = await import(pathToFileURL(entry).href);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: true });
for (const f of files) {
	const text = fs.readFileSync(f, "utf8");
	console.log(JSON.stringify(Array.from(model.tokenize(text, special === "special"))));
}
await model.dispose();
