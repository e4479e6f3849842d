"""Validation loss of a Hugging Face folder (a `knlp export --format hf` GPT-2, or any
GPT2LMHeadModel / LlamaForCausalLM / Qwen2ForCausalLM folder), computed by Hugging Face
transformers in float32, over the windows `knlp eval` uses (0, T, 2T, ... plus one aligned
to the end whose already-scored targets are ignored), so both numbers must agree. T: the
model's positions unless given. Prints one JSON line.
usage: hf_eval.py MODEL_DIR VAL_BIN [DEVICE] [T] [--logits KNLP_LOGITS]
--logits: knlp's first-window logits (`knlp eval --logits`, raw float32 [T, vocab]) are
compared with transformers' of the same window: the output gains max_abs_logit_diff and
max_logit (the scale it is relative to).
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from windows import eval_windows, scored_before  # scripts/ref/windows.py


def main():
    export, val = sys.argv[1], sys.argv[2]
    knlp_logits = sys.argv[sys.argv.index("--logits") + 1] if "--logits" in sys.argv else ""
    args = [a for a in sys.argv[1:] if a != "--logits" and a != knlp_logits]
    dev = args[2] if len(args) > 2 else "cpu"
    model = AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32).to(dev).eval()
    c = model.config
    T = int(args[3]) if len(args) > 3 else getattr(c, "n_positions", None) or c.max_position_embeddings
    d = torch.from_numpy(np.fromfile(val, dtype=np.uint16).astype(np.int64))
    T, starts, covered, tail = eval_windows(d.numel(), T)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), 8):
            chunk = starts[i:i + 8]
            x = torch.stack([d[s:s + T] for s in chunk]).to(dev)
            y = torch.stack([d[s + 1:s + T + 1] for s in chunk]).clone()
            if tail and i + len(chunk) == len(starts):
                s = chunk[-1]
                for t in range(T):
                    if scored_before(s, t, covered, True):
                        y[-1, t] = -1
            y = y.to(dev)
            logits = model(x).logits.float()
            total += torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1),
                                                       ignore_index=-1, reduction="sum").item()
            count += int((y >= 0).sum())
    out = {"impl": "transformers", "tokens": count, "val_loss": total / count,
           "params": sum(p.numel() for p in model.parameters())}
    if knlp_logits:
        with torch.no_grad():
            mine = model(d[:T][None].to(dev)).logits.float()[0].cpu()
        theirs = torch.from_numpy(np.fromfile(knlp_logits, dtype=np.float32)).view(T, -1)
        out["max_abs_logit_diff"] = (mine[:, :theirs.shape[1]] - theirs).abs().max().item()
        out["max_logit"] = mine.abs().max().item()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
