#!/bin/bash
# What `make deps` installs must be built in and present: a missing oneDNN, METIS, Gloo,
# ggml reference library, llama.cpp (node-llama-cpp), Chromium or Node.js fails make check
# (and the dashboard's web server and charting library) here instead of letting the tests that need them skip and the suite stay green (the
# ResNets' engine, the METIS layout, data parallel on the CPU, the GGUF checks against ggml
# and llama.cpp, the HTML report check).
. "$(dirname "$0")/lib.sh"
out=$("$KNLP" version --features) || bad "knlp version --features failed"
need() { # feature
	echo "$out" | grep -q "^$1 *yes " && ok || bad "$1 is missing from this build: $(echo "$out" | grep "^$1 ") (run make deps, then rebuild: rm -rf build && make)"
}
need onednn
need metis
need gloo
need dashboard
need dashboard-charts
if [ "$(uname -m)" = x86_64 ]; then
	need ggml-reference
	need llama-cpp
else
	echo "note: no ggml reference library for $(uname -m) (node-llama-cpp ships x86-64 only); its tests do not run"
fi
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 && ok || bad "chromium is missing (make deps)"
command -v node >/dev/null 2>&1 && ok || bad "node is missing (make deps)"
finish
