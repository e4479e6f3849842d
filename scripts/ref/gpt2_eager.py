"""Plain eager PyTorch GPT-2 training step: the baseline `make bench` compares knlp with.

Same model as knlp's (pre-LN, tied head, erf GELU, no dropout), same step (forward,
cross-entropy, backward, global-norm clip 1.0, torch.optim.AdamW), same shapes and thread
count, on Debian's python3-torch (the same libtorch 1.13). Prints one JSON line.
usage: gpt2_eager.py L H C T B V STEPS
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, c, h, t):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.out = nn.Linear(c, c)
        self.register_buffer("causal", torch.tril(torch.ones(t, t, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, c, h, t):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = Attention(c, h, t)
        self.up, self.down = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.down(F.gelu(self.up(self.n2(x))))


class GPT(nn.Module):
    def __init__(self, layers, heads, c, t, v):
        super().__init__()
        self.tok, self.pos = nn.Embedding(v, c), nn.Embedding(t, c)
        self.blocks = nn.ModuleList(Block(c, heads, t) for _ in range(layers))
        self.norm = nn.LayerNorm(c)

    def forward(self, idx, tgt):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        for b in self.blocks:
            x = b(x)
        logits = self.norm(x) @ self.tok.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1))


def main():
    layers, heads, c, t, b, v, steps = map(int, sys.argv[1:8])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = GPT(layers, heads, c, t, v)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    x = torch.randint(0, v, (b, t))
    y = torch.randint(0, v, (b, t))

    def step():
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"impl": "pytorch-eager", "tokens_per_sec": b * t / dt, "step_ms": dt * 1e3,
                      "peak_rss_mb": rss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
