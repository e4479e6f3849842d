#!/usr/bin/python3
"""The numbers of a finished run that must not change across refactors: every logged
training loss, the evaluation figures, and a digest of the final checkpoint's tensors
(weights, optimizer moments, masks, buffers; generator states left out).

    extract.py FAMILY RUN_DIR     one JSON object on stdout

It reads metrics.jsonl and the safetensors files directly (no knlp code), so it measures
the trainers from outside."""
import hashlib
import json
import struct
import sys

# Evaluation figures per family, by their metrics.jsonl names (first present name wins, so a
# renamed key can be listed beside the old one without changing the recorded value).
EVAL_KEYS = {
    "gpt2": [("train_loss",), ("val_loss",)],
    "image": [("train_loss",), ("test_loss",), ("test_accuracy",)],
    "gnn": [("train_loss",), ("val_pr_auc",), ("val_f1",), ("val_roc_auc",), ("ra_fetch",)],
}


def records(run):
    out = []
    with open(run + "/metrics.jsonl") as f:
        for line in f:
            out.append(json.loads(line))
    return out


def pick(rec, names):
    for n in names:
        if n in rec:
            return rec[n]
    raise KeyError(f"none of {names} in {sorted(rec)}")


def tensor_digest(run):
    ck = run + "/checkpoints/" + open(run + "/checkpoints/FINAL").read().strip()
    h = hashlib.sha256()
    names = []
    for f in ("model", "optimizer"):
        raw = open(f"{ck}/{f}.safetensors", "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        head = json.loads(raw[8:8 + n])
        for k in sorted(head):
            if k == "__metadata__" or k.startswith("rng."):
                continue
            b, e = head[k]["data_offsets"]
            h.update(f"{f}/{k}:{head[k]['dtype']}:{head[k]['shape']}\n".encode())
            h.update(raw[8 + n + b:8 + n + e])
            names.append(f"{f}/{k}")
    return h.hexdigest(), len(names)


def main():
    family, run = sys.argv[1], sys.argv[2]
    recs = records(run)
    train = [[pick(r, ("step", "iter")), r["loss"]] for r in recs if r.get("type") == "train"]
    ev = [[pick(r, ("step", "iter"))] + [pick(r, k) for k in EVAL_KEYS[family]] for r in recs if r.get("type") == "eval"]
    digest, count = tensor_digest(run)
    print(json.dumps({"train": train, "eval": ev, "tensors": count, "sha256": digest}))


main()
