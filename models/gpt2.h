// GPT-2 (nanoGPT-style): pre-LN blocks, learned positions, tied embedding/head, erf GELU.
// Parameter names follow nanoGPT (transformer.h.N.attn.c_attn.weight, ...); the head reuses
// transformer.wte.weight and is not a separate parameter.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/config.h"

namespace knlp {

// Attention of one block: standard multi-head, MLA (cached latent) or KVSplice (cached
// LayerNorm'd splice of the latent, one RoPE head). See models/attention.h.
enum class AttnKind { Standard, MLA, KVSplice };
enum class Gelu { Erf, Tanh, GgmlTable };

struct GPT2Config {
	int n_layer = 12, n_head = 12, n_embd = 768, block_size = 1024;
	int vocab_size = 50304; // padded
	int vocab_raw = 50257;	// ids the data can contain
	double dropout = 0.0;
	bool bias = true;
	bool fused_attention = true;
	bool fused_head_loss = true;   // chunked linear + cross-entropy (models/linear_ce.h)
	bool head_vocab_blocks = true; // CPU fp32: the fused head in vocabulary blocks (models/fused.h)
	bool blocked_attention = true; // CPU: causal attention in query blocks (models/fused.h)
	bool fused_layernorm = true;   // CPU: residual add + LayerNorm in one pass (models/fused.h)
	bool fused_gelu = true;	       // CPU: the MLP's bias + erf GELU in one pass (models/fused.h)

	// Attention variant (docs/attention.md). Empty layer_kind: every layer standard.
	std::string variant = "vanilla";  // vanilla mla kvsplice hybrid ra gate ra-gate
	std::vector<AttnKind> layer_kind; // one per layer when set
	int d_latent = 256;		  // MLA latent width (the cached values per token)
	int splice_dim = 128;		  // KVSplice width (cached) = its single head's width
	double rope_base = 10000.0;
	std::vector<int> ra_layers; // layers with reciprocal attention
	int ra_heads = 1;	    // last n heads of an RA layer attend reciprocally
	bool sdpa_gate = false;	    // sigmoid(W_g x + b_g) gate on the attention output
	// The MLP's GELU: exact (erf, knlp's and nanoGPT's); the tanh approximation OpenAI's
	// GPT-2 used; or that approximation as ggml's CPU backend computes it, looked up in a
	// table indexed by the input rounded to fp16 (inputs beyond +-10 pass through / give 0),
	// which is what llama.cpp evaluates for a gpt2 GGUF file (knlp's GGUF loads use it).
	Gelu gelu = Gelu::Erf;

	AttnKind kind(int layer) const { return layer_kind.empty() ? AttnKind::Standard : layer_kind[size_t(layer)]; }
	bool is_ra(int layer) const;
	bool vanilla() const; // plain GPT-2 (exportable to Hugging Face)
	// Cached values (not bytes) per token for one layer, and for all layers.
	int64_t cache_values_per_token(int layer) const;
	int64_t cache_values_per_token() const;
	int64_t attention_params(int layer) const; // analytic parameters of one attention module

	// From CONFIG_GPT2_* and the attention menu; data_vocab: meta.json's, used when
	// CONFIG_GPT2_VOCAB_SIZE is 0.
	static GPT2Config from(const Settings &s, int data_vocab);
	void validate() const;
	int64_t num_params() const; // analytic count, equals the module's
	// Training FLOPs per token (6N + attention, as in the PaLM appendix / nanoGPT).
	double flops_per_token(int T) const;
};

int pad_vocab(int vocab, int multiple);
// The variant name of an attention choice (vanilla mla kvsplice hybrid ra gate ra-gate).
const char *variant_name(choice::Gpt2Attn v);

// Where the hybrid variant puts its KVSplice layers (MLA everywhere else).
struct HybridPlacement {
	std::string where = "last"; // last, first, list, fisher
	int count = 0;		    // layers for last/first/fisher; 0: n_layer / 3
	std::string list;	    // "8 9 10 11" or "8,9,10,11" for where == list
	std::string fisher_file;    // JSON of `knlp fim attention --layers all`
};

// Set c's per-layer attention from a variant name (vanilla mla kvsplice hybrid ra gate
// ra-gate). Errors name the offending symbol.
void set_attention_variant(GPT2Config &c, const std::string &variant, const HybridPlacement &hp = {}, int ra_layers = 3,
			   int ra_heads = 1);

// Per-layer cache for incremental decoding. What a layer keeps depends on its attention:
// standard keys and values [B, H, S, D] (plus the reciprocal heads' queries in RA layers),
// the MLA latent [B, S, d_latent], or the KVSplice splice [B, S, splice_dim].
struct KVCache {
	std::vector<std::vector<torch::Tensor>> layers;
	int64_t len = 0; // tokens cached
	int64_t length() const { return len; }
	int64_t bytes() const;
};

class LayerNormImpl : public torch::nn::Module {
public:
	LayerNormImpl(int dim, bool bias);
	torch::Tensor forward(const torch::Tensor &x);
	// (x + d, LayerNorm(x + d)); in one fused pass where `fused` (models/fused.h).
	std::pair<torch::Tensor, torch::Tensor> forward_add(const torch::Tensor &x, const torch::Tensor &d, bool fused);
	torch::Tensor weight, bias;

private:
	int dim_;
};
TORCH_MODULE(LayerNorm);

// The MLP's activation of GPT2Config::gelu.
torch::Tensor gelu(const torch::Tensor &x, Gelu kind);

class AttentionBase;
class MLPImpl : public torch::nn::Module {
public:
	explicit MLPImpl(const GPT2Config &c, int layer = 0);
	torch::Tensor forward(const torch::Tensor &x);
	void set_gelu(Gelu g) { gelu_ = g; }
	torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};

private:
	double dropout_;
	int layer_;
	Gelu gelu_;
	bool fused_gelu_;
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
public:
	BlockImpl(const GPT2Config &c, int layer);
	torch::Tensor forward(const torch::Tensor &x, const torch::Tensor &mask_bias, int64_t pos0,
			      std::vector<torch::Tensor> *cache, torch::Tensor *probs = nullptr);
	// The block on a residual stream carried as a pending sum r + d (d undefined: none):
	// returns the next (r, d), so each LayerNorm can fuse the add in front of it (`fused`).
	// forward(x) is forward_pair(x, {}, false) summed.
	std::pair<torch::Tensor, torch::Tensor> forward_pair(const torch::Tensor &r, const torch::Tensor &d, bool fused,
							     const torch::Tensor &mask_bias, int64_t pos0,
							     std::vector<torch::Tensor> *cache, torch::Tensor *probs);
	LayerNorm ln_1{nullptr}, ln_2{nullptr};
	std::shared_ptr<AttentionBase> attn;
	MLP mlp{nullptr};
};
TORCH_MODULE(Block);

struct GPT2Output {
	// [B, T, V], [B, 1, V] without targets; undefined when the fused CPU head computed the
	// loss directly.
	torch::Tensor logits;
	torch::Tensor loss; // defined when targets were given
};

class GPT2Impl : public torch::nn::Module {
public:
	explicit GPT2Impl(const GPT2Config &c);
	// Training / scoring: idx [B, T]; targets [B, T] with -1 ignored. Without targets only
	// the last position's logits are computed (as nanoGPT does for generation).
	GPT2Output forward(const torch::Tensor &idx, const torch::Tensor &targets = {});
	// Logits of every position (no loss): used by evaluation and the KV-cache tests.
	torch::Tensor forward_all(const torch::Tensor &idx);
	// Incremental decoding: idx holds only the new tokens; returns their logits [B, T, V].
	torch::Tensor forward_cached(const torch::Tensor &idx, KVCache &cache);

	// Softmax attention probabilities [B, H, T, T] of the chosen layers (base heads, as the
	// Fisher spectrum uses them), from one no-grad forward pass.
	std::vector<torch::Tensor> attention_probs(const torch::Tensor &idx, const std::vector<int> &layers);

	const GPT2Config &config() const { return c_; }
	// Switch every MLP's activation (same weights): quantize compares the float model with
	// the GGUF file's as llama.cpp computes both.
	void set_gelu(Gelu g);
	int64_t count_parameters();
	void init_weights(); // spec init: N(0, 0.02), c_proj N(0, 0.02/sqrt(2L)), biases 0

	torch::nn::Embedding wte{nullptr}, wpe{nullptr};
	torch::nn::ModuleList h;
	LayerNorm ln_f{nullptr};

private:
	torch::Tensor hidden(const torch::Tensor &idx, int64_t pos0, KVCache *cache,
			     std::vector<torch::Tensor> *probs = nullptr, const std::vector<int> *prob_layers = nullptr,
			     bool sparse_wte_grad = false);
	torch::Tensor mask_bias(int64_t T, int64_t S, torch::Device dev);

	GPT2Config c_;
	torch::Tensor causal_bias_; // [block, block] additive mask, built once
};
TORCH_MODULE(GPT2);

} // namespace knlp
