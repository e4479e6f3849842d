#!/usr/bin/python3
"""Write a randomly initialised Hugging Face model folder (config.json, safetensors weights
in Hugging Face's names and layout, the tokenizer files when given): the test models of
knlp's Hugging Face import. Standard library and Debian's torch only.

  hf_random_model.py OUT --arch qwen2|llama|gpt2 [--dtype f32|bf16|f16] [--layers 2]
      [--hidden 64] [--heads 4] [--kv-heads 2] [--inter 160] [--vocab N] [--tokenizer DIR]
      [--tied] [--shards 2] [--seed 0] [--rope-scaling none|linear|llama3] [--mild]
"""
import argparse, json, os, shutil, struct
import torch

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--arch", required=True, choices=["qwen2", "llama", "gpt2"])
p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
p.add_argument("--layers", type=int, default=2)
p.add_argument("--hidden", type=int, default=64)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--kv-heads", type=int, default=2)
p.add_argument("--inter", type=int, default=160)
p.add_argument("--vocab", type=int, default=0)
p.add_argument("--ctx", type=int, default=256)
p.add_argument("--tokenizer", default="")
p.add_argument("--tied", action="store_true")
p.add_argument("--shards", type=int, default=1)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--rope-scaling", default="none", choices=["none", "linear", "llama3"])
p.add_argument("--mild", action="store_true",
               help="smaller embedding / head scales: losses near what trained models give (for "
                    "comparisons whose tolerance is relative to quantization noise)")
a = p.parse_args()

vocab = a.vocab
if a.tokenizer:
    tj = json.load(open(os.path.join(a.tokenizer, "tokenizer.json")))
    ids = list(tj["model"]["vocab"].values()) + [t["id"] for t in tj["added_tokens"]]
    vocab = max(vocab, max(ids) + 1)
assert vocab > 0, "--vocab or --tokenizer"
g = torch.Generator().manual_seed(a.seed)
dt = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[a.dtype]
W = {}
def rnd(*shape, std=0.02, mean=0.0):
    return (torch.randn(*shape, generator=g) * std + mean)

C, L = a.hidden, a.layers
if a.arch == "gpt2":
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab, "n_embd": C,
              "n_layer": L, "n_head": a.heads, "n_positions": a.ctx, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    W["wte.weight"] = rnd(vocab, C)
    W["wpe.weight"] = rnd(a.ctx, C, std=0.01)
    for i in range(L):
        h = f"h.{i}."
        W[h + "ln_1.weight"] = rnd(C, std=0.1, mean=1.0); W[h + "ln_1.bias"] = rnd(C)
        W[h + "attn.c_attn.weight"] = rnd(C, 3 * C); W[h + "attn.c_attn.bias"] = rnd(3 * C)
        W[h + "attn.c_proj.weight"] = rnd(C, C); W[h + "attn.c_proj.bias"] = rnd(C)
        W[h + "ln_2.weight"] = rnd(C, std=0.1, mean=1.0); W[h + "ln_2.bias"] = rnd(C)
        W[h + "mlp.c_fc.weight"] = rnd(C, 4 * C); W[h + "mlp.c_fc.bias"] = rnd(4 * C)
        W[h + "mlp.c_proj.weight"] = rnd(4 * C, C); W[h + "mlp.c_proj.bias"] = rnd(C)
    W["ln_f.weight"] = rnd(C, std=0.1, mean=1.0); W["ln_f.bias"] = rnd(C)
else:
    H, KV = a.heads, a.kv_heads
    D = C // H
    config = {"architectures": ["Qwen2ForCausalLM" if a.arch == "qwen2" else "LlamaForCausalLM"],
              "model_type": a.arch, "vocab_size": vocab, "hidden_size": C, "intermediate_size": a.inter,
              "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
              "max_position_embeddings": a.ctx, "rope_theta": 1000000.0 if a.arch == "qwen2" else 500000.0,
              "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": a.tied,
              "torch_dtype": {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[a.dtype],
              "bos_token_id": 0, "eos_token_id": 1}
    if a.rope_scaling == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    elif a.rope_scaling == "llama3":
        config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    # Scales chosen so that every part matters to the loss: peaked attention (rotary
    # positions visible), logits far from uniform.
    W["model.embed_tokens.weight"] = rnd(vocab, C, std=0.1 if a.mild else 1.0 if not a.tied else 0.5)
    for i in range(L):
        h = f"model.layers.{i}."
        W[h + "input_layernorm.weight"] = rnd(C, std=0.1, mean=1.0)
        W[h + "self_attn.q_proj.weight"] = rnd(H * D, C, std=0.06 if a.mild else 0.3)
        W[h + "self_attn.k_proj.weight"] = rnd(KV * D, C, std=0.06 if a.mild else 0.3)
        W[h + "self_attn.v_proj.weight"] = rnd(KV * D, C, std=0.2)
        if a.arch == "qwen2":
            W[h + "self_attn.q_proj.bias"] = rnd(H * D, std=0.1)
            W[h + "self_attn.k_proj.bias"] = rnd(KV * D, std=0.1)
            W[h + "self_attn.v_proj.bias"] = rnd(KV * D, std=0.02)
        W[h + "self_attn.o_proj.weight"] = rnd(C, H * D, std=0.1)
        W[h + "post_attention_layernorm.weight"] = rnd(C, std=0.1, mean=1.0)
        W[h + "mlp.gate_proj.weight"] = rnd(a.inter, C, std=0.2)
        W[h + "mlp.up_proj.weight"] = rnd(a.inter, C, std=0.2)
        W[h + "mlp.down_proj.weight"] = rnd(C, a.inter, std=0.1)
    W["model.norm.weight"] = rnd(C, std=0.1, mean=1.0)
    if not a.tied:
        W["lm_head.weight"] = rnd(vocab, C, std=0.1 if a.mild else 0.5)

DTYPE = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        t = t.to(dt).contiguous()
        b = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPE[dt], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)

os.makedirs(a.out, exist_ok=True)
items = list(W.items())
if a.shards <= 1:
    write_safetensors(os.path.join(a.out, "model.safetensors"), items)
else:
    per = (len(items) + a.shards - 1) // a.shards
    weight_map = {}
    for s in range(a.shards):
        name = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
        part = items[s * per:(s + 1) * per]
        write_safetensors(os.path.join(a.out, name), part)
        weight_map.update({n: name for n, _ in part})
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=1)
json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=1)
if a.tokenizer:
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(a.tokenizer, f)):
            shutil.copy(os.path.join(a.tokenizer, f), os.path.join(a.out, f))
print(json.dumps({"out": a.out, "vocab": vocab, "params": sum(t.numel() for t in W.values())}))
