#!/bin/bash
# CONFIG_TRACKER_TENSORBOARD: the events file a run writes, read by an independent reader
# written here from the formats' specifications (TFRecord framing: little-endian uint64
# length, masked CRC-32C of those 8 bytes, the payload, masked CRC-32C of the payload;
# tensorflow.Event / Summary / TensorProto protocol-buffer fields), not from knlp's writer.
# Every number of every metrics.jsonl record must be the scalar <type>/<field> at its step
# (as float32), nothing else may be there, the config and the samples are text for the
# "text" plugin; after a resume from an earlier checkpoint (with a torn record appended, as a
# kill leaves it) the file again equals metrics.jsonl, and its losses equal an uninterrupted
# run's.
. "$(dirname "$0")/lib.sh"
cd "$T"
cycle_data data
tiny_gpt2 base.config "$T/data" CONFIG_CHECKPOINT_INTERVAL=10 CONFIG_TRACKER_TENSORBOARD=y
train() { "$KNLP" train --config base.config --set RUN_NAME="$1" --set OUTPUT_DIR="\"$T/runs\"" "${@:2}" >"$1.log" 2>&1; }
train u || bad "uninterrupted run: $(tail -2 u.log)"
train r || bad "second run: $(tail -2 r.log)"

cat >reader.py <<'PY'
import glob, json, os, struct, sys

def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

def records(path):
    raw = open(path, "rb").read()
    i = 0
    while i < len(raw):
        if i + 12 > len(raw):
            raise SystemExit(f"{path}: torn record header at byte {i}")
        (n,) = struct.unpack_from("<Q", raw, i)
        (lc,) = struct.unpack_from("<I", raw, i + 8)
        if masked(crc32c(raw[i:i + 8])) != lc:
            raise SystemExit(f"{path}: length CRC mismatch at byte {i}")
        data = raw[i + 12:i + 12 + n]
        (dc,) = struct.unpack_from("<I", raw, i + 12 + n)
        if len(data) != n or masked(crc32c(data)) != dc:
            raise SystemExit(f"{path}: data CRC mismatch at byte {i}")
        yield data
        i += 16 + n

def fields(buf):
    """protobuf wire format -> {field: [values]} (varint ints, fixed64/32 raw bytes, bytes)."""
    out, i = {}, 0
    def varint():
        nonlocal i
        v = s = 0
        while True:
            b = buf[i]; i += 1
            v |= (b & 0x7F) << s; s += 7
            if not b & 0x80:
                return v
    while i < len(buf):
        key = varint()
        f, w = key >> 3, key & 7
        if w == 0:
            v = varint()
        elif w == 1:
            v = buf[i:i + 8]; i += 8
        elif w == 5:
            v = buf[i:i + 4]; i += 4
        elif w == 2:
            n = varint(); v = buf[i:i + n]; i += n
        else:
            raise SystemExit(f"wire type {w}")
        out.setdefault(f, []).append(v)
    return out

def events(run):
    files = glob.glob(os.path.join(run, "events.out.tfevents.*"))
    if len(files) != 1:
        raise SystemExit(f"{run}: {len(files)} events files")
    scalars, texts, version = {}, {}, None
    for k, data in enumerate(records(files[0])):
        e = fields(data)
        wall = struct.unpack("<d", e[1][0])[0]
        assert wall > 1.5e9, wall
        step = e.get(2, [0])[0]
        if 3 in e:
            assert k == 0, "file_version must be the first event"
            version = e[3][0].decode()
            continue
        for v in fields(e[5][0])[1]:
            v = fields(v)
            tag = v[1][0].decode()
            if 2 in v:
                key = (tag, step)
                assert key not in scalars, f"scalar {key} twice"
                scalars[key] = struct.unpack("<f", v[2][0])[0]
            else:
                t = fields(v[8][0])
                assert t[1][0] == 7, "text tensors are DT_STRING"
                plugin = fields(fields(v[9][0])[1][0])[1][0].decode()
                assert plugin == "text", plugin
                texts[(tag, step)] = t[8][0].decode("utf-8", "replace")
    return version, scalars, texts

def check(run):
    version, scalars, texts = events(run)
    assert version == "brain.Event:2", version
    want = {}
    samples = {}
    for line in open(os.path.join(run, "metrics.jsonl")):
        r = json.loads(line)
        if r["type"] == "sample":
            samples[(f"samples/{r['prompt']}", r["step"])] = r["text"]
            continue
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                want[(f"{r['type']}/{k}", r["step"])] = struct.unpack("<f", struct.pack("<f", v))[0]
    assert want, "no numbers in metrics.jsonl"
    missing = sorted(set(want) - set(scalars))
    extra = sorted(set(scalars) - set(want))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    bad = [k for k in want if want[k] != scalars[k]]
    assert not bad, f"values differ: {bad[:5]}"
    assert texts.pop(("config", 0)) == open(os.path.join(run, "config")).read(), "config text"
    assert samples and texts == samples, f"samples: {sorted(texts)} vs {sorted(samples)}"
    assert ("train/loss", 20) in scalars and ("eval/val_loss", 20) in scalars
    return scalars

if __name__ == "__main__":
    got = [check(r) for r in sys.argv[1:]]
    if len(got) == 2:
        a, b = got
        la = {k: v for k, v in a.items() if k[0] == "train/loss"}
        lb = {k: v for k, v in b.items() if k[0] == "train/loss"}
        assert la == lb and len(la) == 20, "resumed losses differ from the uninterrupted run's"
    print("ok", len(got[0]), "scalars")
PY
$PYTHON reader.py runs/u >check.log 2>&1 && ok || bad "events of a run: $(tail -3 check.log)"

# Resume from step 10 after a kill: the events past step 10 and a torn record must go.
ck=runs/r/checkpoints
rm -rf "$ck"/iter_00000020 "$ck"/FINAL "$ck"/BEST
echo iter_00000010 >"$ck"/LATEST
ev=$(ls runs/r/events.out.tfevents.*)
printf '\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02' >>"$ev"
"$KNLP" train --resume runs/r >resume.log 2>&1 || bad "resume: $(tail -2 resume.log)"
grep -q "resumed" resume.log && ok || bad "the run did not resume: $(tail -2 resume.log)"
$PYTHON reader.py runs/u runs/r >check2.log 2>&1 && ok || bad "events after a resume: $(tail -3 check2.log)"

# The reader is not vacuous: a flipped byte and a missing scalar are both caught.
cp -r runs/u mut
f=$(ls mut/events.out.tfevents.*)
$PYTHON - "$f" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)
PY
$PYTHON reader.py mut >/dev/null 2>&1 && bad "a flipped byte went unnoticed" || ok
rm -rf mut && cp -r runs/u mut
$PYTHON - mut/metrics.jsonl <<'PY'
import json, sys
p = sys.argv[1]; lines = open(p).read().splitlines()
r = json.loads(lines[3]); r["extra_number"] = 1.5; lines[3] = json.dumps(r)
open(p, "w").write("\n".join(lines) + "\n")
PY
$PYTHON reader.py mut >/dev/null 2>&1 && bad "a scalar missing from the events went unnoticed" || ok

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
