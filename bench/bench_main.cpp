// knlp_bench: the measurements behind `make bench`. Each mode prints one JSON line; the
// driver (scripts/bench.sh) runs the baselines in the same invocation and prints ratios.
//
//   knlp_bench train L H C T B V STEPS      GPT-2 training step: tokens/s, MFU, peak RSS
//   knlp_bench optim STEPS [cuda]           AdamW step on the 124M parameter set vs libtorch
//   knlp_bench tokenize byte|gpt2 FILES...  single-thread encode throughput (MB/s)
//   knlp_bench vision lenet5|resnet18|resnet50 BATCH STEPS [channels_last|no_onednn|libtorch_pool|libtorch_ops|direct]
//                                           image training step (images/s), the image
//                                           trainer's step: forward, loss, backward, AdamW
//   knlp_bench pool STEPS                   LeNet-5's ReLU + 2x2 max pool, forward and
//                                           backward at batch 512: the fused kernel
//                                           (models/pool.h) vs libtorch's relu + max_pool2d
//   knlp_bench quant                        GGML block quantize / dequantize throughput per
//                                           type (one thread, MB/s of float32, best of 3)
//   knlp_bench fim L H C T V WINDOWS        Fisher scoring tokens/s (batch-1 windows): the
//                                           empirical Fisher alone and with the true one
//   knlp_bench attention VARIANT L H C B STEPS
//                                           training tokens/s (T 128, byte vocabulary) and
//                                           cached decoding tokens/s at batch 1 up to 512
//                                           tokens of context, for one attention variant
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <sys/resource.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/fsutil.h"
#include "core/torch_compat.h"
#include "data/tokenizer.h"
#include "data/tokens.h"
#include "fim/fisher.h"
#include "models/fused.h"
#include "models/gemm.h"
#include "models/linear_ce.h"
#include "models/gpt2.h"
#include "models/pool.h"
#include "models/onednn.h"
#include "gnn/graph.h"
#include "gnn/layout.h"
#include "gnn/measure.h"
#include "gnn/sage.h"
#include "gnn/sampler.h"
#include "models/vision.h"
#include "optim/optimizer.h"
#include "prune/select.h"
#include "quant/ggml_quants.h"
#include "train/device.h"

using namespace knlp;
using clk = std::chrono::steady_clock;

static double secs(clk::time_point a)
{
	return std::chrono::duration<double>(clk::now() - a).count();
}

// Mean seconds per call of fn over `steps` calls, after `warm` untimed ones.
template <class F> static double mean_secs(int warm, int steps, F fn)
{
	for (int i = 0; i < warm; i++)
		fn();
	auto t0 = clk::now();
	for (int i = 0; i < steps; i++)
		fn();
	return secs(t0) / steps;
}

// knlp's AdamW over a module's parameters as the trainers run it: one update, clipped to
// norm 1 when `clip`, then the gradients dropped.
struct BenchOptimizer {
	explicit BenchOptimizer(torch::nn::Module &m, OptimizerOptions o = {}) : opt(named(m), o) {}
	void step(double lr, bool clip)
	{
		double scale = 1.0;
		if (clip) {
			const double norm = opt.grad_norm();
			scale = norm > 1.0 ? 1.0 / (norm + 1e-6) : 1.0;
		}
		opt.step(lr, scale);
		for (auto &s : opt.state())
			s.param.mutable_grad().reset();
	}
	static std::vector<std::pair<std::string, torch::Tensor>> named(torch::nn::Module &m)
	{
		std::vector<std::pair<std::string, torch::Tensor>> v;
		for (auto &p : m.named_parameters())
			v.emplace_back(p.key(), p.value());
		return v;
	}
	Optimizer opt;
};

static double peak_rss_mb()
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss / 1024.0;
}

// KNLP_BENCH_PROFILE=FILE: a chrome trace of 3 calls of step, after `warm` untraced ones.
template <class F> static void profile_if_asked(F step, int warm = 0)
{
	const char *prof = std::getenv("KNLP_BENCH_PROFILE");
	if (!prof)
		return;
	for (int i = 0; i < warm; i++)
		step();
	torch::autograd::profiler::RecordProfile guard(prof);
	for (int i = 0; i < 3; i++)
		step();
}

static int bench_train(char **a)
{
	GPT2Config c;
	c.n_layer = std::atoi(a[0]), c.n_head = std::atoi(a[1]), c.n_embd = std::atoi(a[2]);
	c.block_size = std::atoi(a[3]);
	int B = std::atoi(a[4]);
	c.vocab_raw = c.vocab_size = std::atoi(a[5]);
	int steps = std::atoi(a[6]);
	c.dropout = 0.0;
	// KNLP_BENCH_OFF: a comma list of fusions to turn off (head, vocab_blocks, attention,
	// layernorm, gelu, gemm, gemm_bf16).
	const char *off_env = std::getenv("KNLP_BENCH_OFF");
	std::string off = off_env ? std::string(",") + off_env + "," : "";
	auto on = [&](const char *name) { return off.find(std::string(",") + name + ",") == std::string::npos; };
	c.fused_head_loss = on("head");
	c.head_vocab_blocks = on("vocab_blocks");
	c.blocked_attention = on("attention");
	c.fused_layernorm = on("layernorm");
	c.fused_gelu = on("gelu");
	if (!on("gemm_bf16")) // knlp's bf16 product off: oneDNN's under autocast instead
		set_own_bf16_gemm(false);
	if (!on("gemm")) // knlp's float32 product (models/gemm.h) off: the BLAS instead
		set_own_gemm(false);
	// KNLP_BENCH_BF16=1: the step under CPU bf16 autocast, MFU against the bf16 peak.
	const bool bf16 = std::getenv("KNLP_BENCH_BF16") != nullptr;
	torch::manual_seed(0);
	double peak = measure_matmul_peak(torch::kCPU, bf16);
	GPT2 m(c);
	BenchOptimizer opt(*m);
	auto x = torch::randint(0, c.vocab_size, {B, c.block_size}, torch::kLong);
	auto y = torch::randint(0, c.vocab_size, {B, c.block_size}, torch::kLong);
	auto step = [&] {
		torch::Tensor loss;
		{
			compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
			loss = m->forward(x, y).loss;
		}
		loss.backward();
		opt.step(1e-4, true);
		return loss.item<double>();
	};
	profile_if_asked([&] { step(); }, 2);
	const double dt = mean_secs(3, steps, step);
	double tok_s = double(B) * c.block_size / dt;
	double mfu = c.flops_per_token(c.block_size) * tok_s / peak;
	nlohmann::json j = {{"impl", "knlp"},
			    {"off", off_env ? off_env : ""},
			    {"gemm", gemm_engine()},
			    {"gemm_bf16", bf16_gemm_engine()},
			    {"bf16", bf16},
			    {"tokens_per_sec", tok_s},
			    {"step_ms", dt * 1e3},
			    {"mfu", mfu},
			    {"peak_gflops", peak / 1e9},
			    {"peak_rss_mb", peak_rss_mb()},
			    {"params", c.num_params()},
			    {"threads", torch::get_num_threads()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

// Medians of a and b in milliseconds over `reps` runs each, the runs alternating (a, b, a,
// b, ...) so that a shared machine's drift reaches both arms alike; two warm-ups of each.
template <class A, class B> static std::pair<double, double> paired_median_ms(int reps, A a, B b)
{
	a(), b(), a(), b();
	std::vector<double> ta, tb;
	for (int i = 0; i < reps; i++) {
		auto t0 = clk::now();
		a();
		ta.push_back(secs(t0) * 1e3);
		t0 = clk::now();
		b();
		tb.push_back(secs(t0) * 1e3);
	}
	std::sort(ta.begin(), ta.end());
	std::sort(tb.begin(), tb.end());
	return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

// knlp's float32 product (models/gemm.h) against libtorch's (the BLAS it links) on the
// products of one GPT-2 layer at batch B, T tokens, C channels: each linear's forward,
// input gradient and weight gradient. GFLOP/s, medians of `reps` alternating calls.
static int bench_gemm(char **a)
{
	const int64_t B = std::atoi(a[0]), T = std::atoi(a[1]), C = std::atoi(a[2]);
	const int reps = std::atoi(a[3]);
	const int64_t M = B * T;
	torch::manual_seed(0);
	nlohmann::json rows = nlohmann::json::array();
	double sum_own = 0, sum_blas = 0; // seconds over all products: the layer's whole share
	// One product's row: its shape, both rates and the ratio, and the layer's sums.
	auto add_row = [&](const char *layer, const char *what, int64_t m, int64_t n, int64_t k, double own,
			   double lib) {
		const double flop = 2.0 * double(m) * double(n) * double(k);
		sum_own += own, sum_blas += lib;
		rows.push_back({{"layer", layer},
				{"product", what},
				{"m", m},
				{"n", n},
				{"k", k},
				{"knlp_gflops", flop / own / 1e6},
				{"libtorch_gflops", flop / lib / 1e6},
				{"speedup", lib / own}});
	};
	// The layer's line: every product and the sums.
	auto print_summary = [&](const std::string &engine, bool bf16) {
		nlohmann::json j = {{"engine", engine},
				    {"products", rows},
				    {"knlp_ms", sum_own},
				    {"libtorch_ms", sum_blas},
				    {"speedup", sum_blas / sum_own},
				    {"threads", torch::get_num_threads()}};
		if (bf16)
			j["bf16"] = true;
		std::printf("%s\n", j.dump().c_str());
		return 0;
	};
	struct Layer {
		const char *name;
		int64_t in, out;
	};
	const std::vector<Layer> layers = {Layer{"c_attn", C, 3 * C}, Layer{"attn.c_proj", C, C},
					   Layer{"c_fc", C, 4 * C}, Layer{"mlp.c_proj", 4 * C, C}};
	if (std::getenv("KNLP_BENCH_BF16")) {
		// bf16 operands and results: knlp's bf16 product against libtorch's bf16 mm (oneDNN).
		TORCH_CHECK(bf16_gemm_available(), "knlp_bench gemm: KNLP_BENCH_BF16 needs a CPU with AVX512-BF16");
		for (const Layer &l : layers) {
			auto bf = torch::kBFloat16;
			auto x = torch::randn({M, l.in}).to(bf), w = torch::randn({l.out, l.in}).to(bf),
			     gy = torch::randn({M, l.out}).to(bf);
			// The weight gradient in float32, as training keeps it: libtorch's bf16 product
			// and the cast autocast's backward then runs.
			auto y = torch::empty({M, l.out}, bf), gx = torch::empty({M, l.in}, bf),
			     gw = torch::empty({l.out, l.in}), gw16 = torch::empty({l.out, l.in}, bf);
			struct Product {
				const char *what;
				bool ta, tb;
				int64_t m, n, k;
				torch::Tensor a, b, out, ta_t, tb_t;
				int64_t lda, ldb;
			};
			std::vector<Product> ps = {
				{"forward", false, true, M, l.out, l.in, x, w, y, x, w.t(), l.in, l.in},
				{"input_grad", false, false, M, l.in, l.out, gy, w, gx, gy, w, l.out, l.in},
				{"weight_grad", true, false, l.out, l.in, M, gy, x, gw, gy.t(), x, l.out, l.in}};
			for (auto &p : ps) {
				auto [own, lib] = paired_median_ms(
					reps,
					[&] {
						gemm_bf16(p.ta, p.tb, p.m, p.n, p.k, p.a.data_ptr(), true, p.lda,
							  p.b.data_ptr(), true, p.ldb, p.out.data_ptr(),
							  p.out.scalar_type() == bf, p.n);
					},
					[&] {
						if (p.out.scalar_type() == bf)
							at::mm_out(p.out, p.ta_t, p.tb_t);
						else
							p.out.copy_(at::mm_out(gw16, p.ta_t, p.tb_t));
					});
				add_row(l.name, p.what, p.m, p.n, p.k, own, lib);
			}
		}
		return print_summary("knlp-avx512-bf16", true);
	}
	for (const Layer &l : layers) {
		auto x = torch::randn({M, l.in}), w = torch::randn({l.out, l.in}), gy = torch::randn({M, l.out});
		auto y = torch::empty({M, l.out}), gx = torch::empty({M, l.in}), gw = torch::empty({l.out, l.in});
		struct Product {
			const char *what;
			bool ta, tb;
			int64_t m, n, k;
			const float *pa, *pb;
			int64_t lda, ldb;
			float *pc;
			torch::Tensor ta_t, tb_t, out;
		};
		std::vector<Product> ps = {{"forward", false, true, M, l.out, l.in, x.data_ptr<float>(),
					    w.data_ptr<float>(), l.in, l.in, y.data_ptr<float>(), x, w.t(), y},
					   {"input_grad", false, false, M, l.in, l.out, gy.data_ptr<float>(),
					    w.data_ptr<float>(), l.out, l.in, gx.data_ptr<float>(), gy, w, gx},
					   {"weight_grad", true, false, l.out, l.in, M, gy.data_ptr<float>(),
					    x.data_ptr<float>(), l.out, l.in, gw.data_ptr<float>(), gy.t(), x, gw}};
		for (auto &p : ps) {
			auto [own, blas] = paired_median_ms(
				reps,
				[&] {
					sgemm(p.ta, p.tb, p.m, p.n, p.k, 1.0f, p.pa, p.lda, p.pb, p.ldb, 0.0f, p.pc,
					      p.n);
				},
				[&] { at::mm_out(p.out, p.ta_t, p.tb_t); });
			add_row(l.name, p.what, p.m, p.n, p.k, own, blas);
		}
	}
	return print_summary(gemm_engine(), false);
}

// Each fused CPU kernel (models/fused.h) against the libtorch path it replaces, forward and
// backward, at one layer of shape (b): batch B, T tokens, C channels, H heads.
static int bench_kernels(char **a)
{
	const int64_t B = std::atoi(a[0]), T = std::atoi(a[1]), C = std::atoi(a[2]), H = std::atoi(a[3]);
	const int reps = std::atoi(a[4]);
	const int64_t D = C / H;
	torch::manual_seed(0);
	nlohmann::json out = nlohmann::json::object();
	auto full = torch::full({T, T}, -std::numeric_limits<float>::infinity());
	auto bias = torch::triu(full, 1);
	auto mk = [&](std::vector<int64_t> shape) { return torch::randn(shape).requires_grad_(true); };
	{
		auto q = mk({B * H, T, D}), k = mk({B * H, T, D}), v = mk({B * H, T, D});
		auto g = torch::randn({B * H, T, D});
		auto run = [&](bool blocked) {
			torch::Tensor y;
			if (blocked)
				y = blocked_causal_attention(q, k, v, bias, attention_block_rows(T));
			else
				y = torch::bmm(torch::softmax(torch::baddbmm(bias, q, k.transpose(1, 2), 1.0,
									     1.0 / std::sqrt(double(D))),
							      -1),
					       v);
			y.backward(g);
			q.mutable_grad().reset(), k.mutable_grad().reset(), v.mutable_grad().reset();
		};
		auto [f, u] = paired_median_ms(
			reps, [&] { run(true); }, [&] { run(false); });
		out["attention"] = {{"fused_ms", f},
				    {"unfused_ms", u},
				    {"speedup", u / f},
				    {"block_rows", attention_block_rows(T)}};
		// bf16 q, k, v, as the projection under autocast gives them.
		auto qb = q.detach().to(torch::kBFloat16).requires_grad_(true),
		     kb = k.detach().to(torch::kBFloat16).requires_grad_(true),
		     vb = v.detach().to(torch::kBFloat16).requires_grad_(true);
		auto gb = g.to(torch::kBFloat16);
		auto run_bf = [&](bool blocked) {
			torch::Tensor y;
			if (blocked)
				y = blocked_causal_attention(qb, kb, vb, bias, attention_block_rows(T));
			else
				y = torch::bmm(
					torch::softmax(torch::baddbmm(bias.to(torch::kBFloat16), qb, kb.transpose(1, 2),
								      1.0, 1.0 / std::sqrt(double(D))),
						       -1),
					vb);
			y.backward(gb);
			qb.mutable_grad().reset(), kb.mutable_grad().reset(), vb.mutable_grad().reset();
		};
		auto [fb, ub] = paired_median_ms(
			reps, [&] { run_bf(true); }, [&] { run_bf(false); });
		out["attention_bf16"] = {{"fused_ms", fb}, {"unfused_ms", ub}, {"speedup", ub / fb}};
	}
	{
		// The MLP's activation after its first product h = x W^T ([B*T, 4C]): + bias, GELU,
		// forward and backward (gradients of h and the bias).
		auto bias = mk({4 * C});
		auto h = mk({B * T, 4 * C});
		auto g = torch::randn({B * T, 4 * C});
		auto run = [&](bool fused) {
			auto y = fused ? bias_gelu(h, bias) : torch::gelu(h + bias);
			y.backward(g);
			h.mutable_grad().reset(), bias.mutable_grad().reset();
		};
		auto [f, u] = paired_median_ms(
			reps, [&] { run(true); }, [&] { run(false); });
		out["bias_gelu"] = {{"fused_ms", f}, {"unfused_ms", u}, {"speedup", u / f}};
		// The same under bf16 autocast: h is the bf16 product, the bias float32.
		auto hb = h.detach().to(torch::kBFloat16).requires_grad_(true);
		auto gb = g.to(torch::kBFloat16);
		auto run_bf = [&](bool fused) {
			auto y = fused ? bias_gelu(hb, bias) : torch::gelu(hb + bias.to(torch::kBFloat16));
			y.backward(gb);
			hb.mutable_grad().reset(), bias.mutable_grad().reset();
		};
		auto [fb, ub] = paired_median_ms(
			reps, [&] { run_bf(true); }, [&] { run_bf(false); });
		out["bias_gelu_bf16"] = {{"fused_ms", fb}, {"unfused_ms", ub}, {"speedup", ub / fb}};
	}
	{
		auto x = mk({B * T, C}), d = mk({B * T, C}), w = mk({C}), b = mk({C});
		auto gy = torch::randn({B * T, C}), gn = torch::randn({B * T, C});
		auto run = [&](bool fused) {
			torch::Tensor y, n;
			if (fused) {
				std::tie(y, n) = add_layer_norm(x, d, w, b, 1e-5);
			} else {
				y = x + d;
				n = torch::layer_norm(y, {C}, w, b, 1e-5);
			}
			torch::autograd::backward({y, n}, {gy, gn});
			for (auto *t : {&x, &d, &w, &b})
				t->mutable_grad().reset();
		};
		auto [f, u] = paired_median_ms(
			reps, [&] { run(true); }, [&] { run(false); });
		out["add_layernorm"] = {{"fused_ms", f}, {"unfused_ms", u}, {"speedup", u / f}};
	}
	{
		// The head's cross-entropy at shape (a) (768 rows of vocabulary 50304): loss and the
		// logits' gradient. The fused arm also pays a copy of the logits (the kernel works in
		// place, where the GEMM left them); libtorch's reads them and allocates the gradient.
		const int64_t R = 768, V = 50304;
		auto src = torch::randn({R, V}) * 3.0, z = torch::empty_like(src);
		auto t = torch::randint(0, V, {R}, torch::kLong);
		auto run = [&](bool fused) {
			if (fused) {
				z.copy_(src);
				cross_entropy_rows(z, t, 1.0f / float(R), true);
			} else {
				auto l = src.detach().requires_grad_(true);
				torch::nn::functional::cross_entropy(l, t).backward();
			}
		};
		auto [f, u] = paired_median_ms(
			reps, [&] { run(true); }, [&] { run(false); });
		out["cross_entropy"] = {
			{"fused_ms", f}, {"unfused_ms", u}, {"speedup", u / f}, {"rows", R}, {"vocab", V}};
	}
	{
		// The whole head at shape (a) (768 rows of 128 channels, vocabulary 50304): logits,
		// loss and both gradients, in blocks of the vocabulary against whole rows of logits
		// (the chunked head with the row kernel above).
		const int64_t R = 768, C = 128, V = 50304;
		auto x = mk({R, C}), w = torch::randn({V, C}).mul_(0.02).requires_grad_(true);
		auto t = torch::randint(0, V, {R}, torch::kLong);
		auto run = [&](bool blocks) {
			linear_cross_entropy(x, w, t, at::kFloat, 0, blocks).backward();
			x.mutable_grad().reset(), w.mutable_grad().reset();
		};
		auto [f, u] = paired_median_ms(
			reps, [&] { run(true); }, [&] { run(false); });
		out["head_vocab_blocks"] = {{"fused_ms", f},
					    {"unfused_ms", u},
					    {"speedup", u / f},
					    {"rows", R},
					    {"channels", C},
					    {"vocab", V},
					    {"block", head_vocab_block(R)}};
		if (bf16_gemm_available()) {
			// The head under bf16 (products in bf16, statistics in float32) at shapes (a)
			// and (c) (256 rows of 768 channels): through knlp's bf16 product (blocked at
			// (a), row chunks at (c)) against libtorch's bf16 products.
			for (auto [name, rows, ch] :
			     {std::tuple<const char *, int64_t, int64_t>{"head_bf16_a", 768, 128},
			      {"head_bf16_c", 256, 768}}) {
				auto xb = mk({rows, ch}), wb = torch::randn({V, ch}).mul_(0.02).requires_grad_(true);
				auto tb = torch::randint(0, V, {rows}, torch::kLong);
				auto run_bf = [&](bool own) {
					set_own_bf16_gemm(own);
					linear_cross_entropy(xb, wb, tb, at::kBFloat16, 0, true).backward();
					xb.mutable_grad().reset(), wb.mutable_grad().reset();
					set_own_bf16_gemm(true);
				};
				auto [fb, ub] = paired_median_ms(
					reps, [&] { run_bf(true); }, [&] { run_bf(false); });
				out[name] = {{"fused_ms", fb}, {"unfused_ms", ub}, {"speedup", ub / fb},
					     {"rows", rows},   {"channels", ch},   {"vocab", V}};
			}
		}
	}
	std::printf("%s\n", out.dump().c_str());
	return 0;
}

static int bench_attention(char **a)
{
	GPT2Config c;
	c.n_layer = std::atoi(a[1]), c.n_head = std::atoi(a[2]), c.n_embd = std::atoi(a[3]);
	int B = std::atoi(a[4]), steps = std::atoi(a[5]), T = 128, ctx = 512;
	c.block_size = ctx;
	c.vocab_raw = c.vocab_size = 256;
	c.dropout = 0.0;
	c.d_latent = c.n_embd / 2;
	c.splice_dim = c.n_embd / 4;
	std::string v = a[0];
	HybridPlacement hp;
	if (v == "hybrid-first")
		hp.where = "first";
	set_attention_variant(c, v.rfind("hybrid", 0) == 0 ? "hybrid" : v, hp, 1, 1);
	c.validate();
	torch::manual_seed(0);
	GPT2 m(c);
	BenchOptimizer opt(*m);
	auto x = torch::randint(0, 256, {B, T}, torch::kLong), y = torch::randint(0, 256, {B, T}, torch::kLong);
	const double train_dt = mean_secs(3, steps, [&] {
		m->forward(x, y).loss.backward();
		opt.step(1e-4, false);
	});
	// Cached decoding: one token at a time from an empty cache to `ctx` tokens.
	m->eval();
	torch::NoGradGuard ng;
	auto decode = [&] {
		KVCache cache;
		auto tok = torch::zeros({1, 1}, torch::kLong);
		for (int i = 0; i < ctx; i++) {
			auto logits = m->forward_cached(tok, cache);
			tok = logits.select(1, 0).argmax(-1).view({1, 1});
		}
		return cache.bytes();
	};
	int64_t bytes = 0;
	const double dec_dt = mean_secs(1, 1, [&] { bytes = decode(); });
	nlohmann::json j = {{"variant", v},
			    {"train_tokens_per_sec", double(B) * T / train_dt},
			    {"train_step_ms", train_dt * 1e3},
			    {"decode_tokens_per_sec", ctx / dec_dt},
			    {"cache_bytes", bytes},
			    {"cache_values_per_token", c.cache_values_per_token()},
			    {"params", c.num_params()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

static int bench_vision(int argc, char **a)
{
	VisionConfig vc;
	vc.arch = a[0];
	vc.in_channels = vc.arch == "lenet5" ? 1 : 3;
	vc.num_classes = 10;
	const int B = std::atoi(a[1]), steps = std::atoi(a[2]);
	const std::string mode = argc > 3 ? a[3] : "";
	const bool cl = mode == "channels_last";
	// KNLP_BENCH_BF16=1: the forward under CPU bf16 autocast, as knlp's image trainer runs
	// it: the ResNets on the oneDNN blocked engine in bf16 where oneDNN has bf16 kernels for
	// this CPU, on libtorch's ops elsewhere.
	const bool bf16 = std::getenv("KNLP_BENCH_BF16") != nullptr;
	if (mode == "no_onednn") // libtorch's own convolutions instead of oneDNN's
		at::globalContext().setUserEnabledMkldnn(false);
	vc.fused_pool = mode != "libtorch_pool"; // LeNet-5's ReLU + max pool: libtorch's ops
	// ResNets: oneDNN's blocked layout (models/onednn.h) unless a libtorch layout is measured
	vc.onednn = (mode.empty() || mode == "direct") && (!bf16 || onednn::bf16_available());
	vc.winograd = mode.empty(); // direct: the blocked path with direct convolutions only
	torch::manual_seed(0);
	auto m = make_vision_model(vc);
	auto x = torch::randn({B, vc.in_channels, 32, 32});
	auto y = torch::randint(0, 10, {B}, torch::kLong);
	if (cl) {
		m->to(torch::kCPU, torch::kFloat); // parameters keep their layout; convert the 4-D weights
		torch::NoGradGuard ng;
		for (auto &p : m->parameters())
			if (p.dim() == 4)
				p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
		x = x.contiguous(at::MemoryFormat::ChannelsLast);
	}
	BenchOptimizer opt(*m);
	auto step = [&] {
		torch::Tensor out;
		{
			compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
			out = m->forward(x);
		}
		auto loss = torch::nn::functional::cross_entropy(out.to(torch::kFloat), y);
		loss.backward();
		opt.step(1e-3, false);
	};
	for (int i = 0; i < 2; i++)
		step();
	profile_if_asked(step);
	const double dt = mean_secs(0, steps, step);
	nlohmann::json j = {{"impl", cl			       ? "knlp-channels-last"
				     : mode == "no_onednn"     ? "knlp-no-onednn"
				     : mode == "libtorch_pool" ? "knlp-libtorch-pool"
				     : mode == "libtorch_ops"  ? "knlp-libtorch-ops"
				     : mode == "direct"	       ? "knlp-direct"
							       : "knlp"},
			    {"engine", m->engine(bf16)},
			    {"bf16", bf16},
			    {"images_per_sec", B / dt},
			    {"step_ms", dt * 1e3},
			    {"threads", torch::get_num_threads()},
			    {"peak_rss_mb", peak_rss_mb()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

// Both LeNet-5 pooling layers (6x28x28 and 16x10x10 at batch 512), forward and backward,
// alternating the two implementations step by step so that drift hits both alike.
static int bench_pool(char **a)
{
	const int steps = std::atoi(a[0]);
	torch::manual_seed(0);
	std::vector<torch::Tensor> xs = {torch::randn({512, 6, 28, 28}, torch::requires_grad()),
					 torch::randn({512, 16, 10, 10}, torch::requires_grad())};
	std::vector<torch::Tensor> gs = {torch::randn({512, 6, 14, 14}), torch::randn({512, 16, 5, 5})};
	double fwd[2] = {0, 0}, bwd[2] = {0, 0};
	auto run = [&](int impl) {
		for (size_t l = 0; l < xs.size(); l++) {
			auto t0 = clk::now();
			auto y = impl ? torch::max_pool2d(torch::relu(xs[l]), 2) : relu_max_pool2x2(xs[l]);
			auto t1 = clk::now();
			y.backward(gs[l]);
			fwd[impl] += std::chrono::duration<double>(t1 - t0).count();
			bwd[impl] += secs(t1);
			xs[l].mutable_grad().reset();
		}
	};
	for (int i = 0; i < 2; i++)
		run(0), run(1);
	profile_if_asked([&] { run(0), run(1); });
	fwd[0] = fwd[1] = bwd[0] = bwd[1] = 0;
	for (int i = 0; i < steps; i++)
		run(0), run(1);
	auto ms = [&](double t) { return t / steps * 1e3; };
	nlohmann::json j = {{"fused_forward_ms", ms(fwd[0])},
			    {"fused_backward_ms", ms(bwd[0])},
			    {"libtorch_forward_ms", ms(fwd[1])},
			    {"libtorch_backward_ms", ms(bwd[1])},
			    {"speedup", (fwd[1] + bwd[1]) / (fwd[0] + bwd[0])},
			    {"threads", torch::get_num_threads()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

static int bench_optim(char **a)
{
	int steps = std::atoi(a[0]);
	torch::Device dev =
		a[1] && !std::strcmp(a[1], "cuda") ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
	GPT2Config c; // 124M shape
	c.vocab_raw = 50257, c.vocab_size = 50304;
	torch::manual_seed(0);
	GPT2 m(c);
	m->to(dev);
	std::vector<std::pair<std::string, torch::Tensor>> named;
	std::vector<torch::Tensor> plain;
	for (auto &p : m->named_parameters()) {
		named.emplace_back(p.key(), p.value());
		p.value().mutable_grad() = torch::randn_like(p.value()) * 1e-3;
		plain.push_back(p.value());
	}
	Optimizer mine(named, OptimizerOptions{});
	torch::optim::AdamW ref(plain, torch::optim::AdamWOptions(1e-4).weight_decay(0.1));
	mine.step(1e-4);
	ref.step();
	synchronize(dev);
	auto t0 = clk::now();
	for (int i = 0; i < steps; i++)
		mine.step(1e-4);
	synchronize(dev);
	double ours = secs(t0) / steps;
	t0 = clk::now();
	for (int i = 0; i < steps; i++)
		ref.step();
	synchronize(dev);
	double theirs = secs(t0) / steps;
	nlohmann::json j = {
		{"params", c.num_params()}, {"knlp_step_ms", ours * 1e3},	   {"libtorch_step_ms", theirs * 1e3},
		{"speedup", theirs / ours}, {"threads", torch::get_num_threads()}, {"device", dev.str()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

static int bench_tokenize(int argc, char **a)
{
	// Optional "--dump FILE": write each file's ids as a JSON array per line (for the
	// agreement check against the JavaScript encoder), outside the timed loop.
	std::string dump;
	if (argc >= 3 && !std::strcmp(a[0], "--dump")) {
		dump = a[1];
		a += 2;
		argc -= 2;
	}
	auto tok = make_tokenizer(a[0], "");
	std::vector<std::string> texts;
	size_t bytes = 0;
	for (int i = 1; i < argc; i++) {
		texts.push_back(read_file(a[i]));
		bytes += texts.back().size();
	}
	size_t tokens = 0;
	auto t0 = clk::now();
	for (const auto &t : texts)
		tokens += tok->encode(t).size();
	double dt = secs(t0);
	if (!dump.empty()) {
		std::string out;
		for (const auto &t : texts)
			out += nlohmann::json(tok->encode(t)).dump() + "\n";
		write_file_atomic(dump, out);
	}
	nlohmann::json j = {{"tokenizer", a[0]},
			    {"bytes", bytes},
			    {"tokens", tokens},
			    {"seconds", dt},
			    {"mb_per_sec", bytes / 1e6 / dt}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

static int bench_quant()
{
	const int64_t n = int64_t(1) << 22; // 16 MB of float32
	std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
	torch::manual_seed(0);
	auto r = torch::randn({n}) * 0.02;
	std::memcpy(x.data(), r.data_ptr<float>(), size_t(n) * 4);
	nlohmann::json out = nlohmann::json::object();
	for (GgmlType t :
	     {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
		std::vector<uint8_t> b(static_cast<size_t>(ggml_row_bytes(t, n)));
		double q = 1e30, d = 1e30;
		for (int rep = 0; rep < 3; rep++) {
			auto t0 = clk::now();
			ggml_quantize(t, x.data(), n, b.data());
			q = std::min(q, secs(t0));
			t0 = clk::now();
			ggml_dequantize(t, b.data(), n, y.data());
			d = std::min(d, secs(t0));
		}
		out[ggml_type_info(t).name] = {{"quantize_mb_s", 4.0 * double(n) / q / 1e6},
					       {"dequantize_mb_s", 4.0 * double(n) / d / 1e6}};
	}
	std::printf("%s\n", out.dump().c_str());
	return 0;
}

static int bench_select(char **a)
{
	// Global threshold over the GPT-2 124M prunable weight shapes (random scores).
	int64_t total_target = std::atoll(a[0]);
	torch::manual_seed(0);
	std::vector<torch::Tensor> scores;
	int64_t total = 0;
	GPT2Config c;
	c.vocab_raw = 50257, c.vocab_size = 50304;
	scores.push_back(torch::rand({c.vocab_size, c.n_embd}));
	for (int l = 0; l < c.n_layer; l++)
		for (auto shape :
		     std::vector<std::vector<int64_t>>{{3 * 768, 768}, {768, 768}, {3072, 768}, {768, 3072}})
			scores.push_back(torch::rand(shape));
	for (auto &t : scores)
		total += t.numel();
	if (total_target > 0 && total_target < total)
		scores.resize(1);
	total = 0;
	for (auto &t : scores)
		total += t.numel();
	int64_t k = total / 2;
	auto t0 = clk::now();
	float exact = kth_smallest(scores, k);
	double t_exact = secs(t0);
	Rng rng(1);
	t0 = clk::now();
	float sampled = sampled_kth_smallest(scores, k, 0.02, rng);
	double t_sampled = secs(t0);
	t0 = clk::now();
	std::vector<torch::Tensor> flat;
	for (auto &t : scores)
		flat.push_back(t.flatten());
	auto ref = std::get<0>(torch::cat(flat).kthvalue(k)).item<float>();
	double t_torch = secs(t0);
	nlohmann::json j = {{"elements", total},
			    {"exact_s", t_exact},
			    {"sampled_2pct_s", t_sampled},
			    {"torch_kthvalue_s", t_torch},
			    {"exact_equals_torch", exact == ref},
			    {"sampled_rel_error", std::abs(sampled - exact) / exact},
			    {"speedup_vs_kthvalue", t_torch / t_exact}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

static int bench_fim(char **a)
{
	GPT2Config c;
	c.n_layer = std::atoi(a[0]), c.n_head = std::atoi(a[1]), c.n_embd = std::atoi(a[2]);
	c.block_size = std::atoi(a[3]);
	c.vocab_raw = c.vocab_size = std::atoi(a[4]);
	const int windows = std::atoi(a[5]);
	c.dropout = 0.0;
	torch::manual_seed(0);
	GPT2 m(c);
	m->init_weights();
	// Random ids in a token file, as `knlp fim score` reads them.
	char tmpl[] = "/tmp/knlp-bench-fim-XXXXXX";
	int fd = mkstemp(tmpl);
	if (fd < 0)
		return 1;
	close(fd);
	const int64_t n = int64_t(windows + 2) * c.block_size + 1;
	auto ids = torch::randint(0, c.vocab_raw, {n}, torch::kInt).to(torch::kShort);
	write_file_atomic(tmpl, std::string(static_cast<const char *>(ids.data_ptr()), size_t(n) * 2));
	TokenFile f(tmpl, c.vocab_raw);
	FisherOptions o;
	o.seq = c.block_size;
	o.progress = false;
	o.chunks = 2; // warm-up
	compute_fisher(m, f, o);
	o.chunks = windows;
	o.true_fisher = false;
	auto e = compute_fisher(m, f, o);
	o.true_fisher = true;
	auto b = compute_fisher(m, f, o);
	std::remove(tmpl);
	nlohmann::json j = {{"impl", "knlp"},
			    {"empirical_tokens_per_sec", double(e.tokens) / e.seconds},
			    {"both_tokens_per_sec", double(b.tokens) / b.seconds},
			    {"threads", torch::get_num_threads()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

// GNN: layout build time per method, sampler batches/s per sampler (1 and 2 threads), and
// GraphSAGE training steps/s on page batches of the synthetic graph.
static int bench_gnn(char **a)
{
	const int64_t nodes = std::atoll(a[0]);
	auto t0 = std::chrono::steady_clock::now();
	Graph g = synth_graph(nodes, 1);
	zscore_columns(g);
	Csr sym = build_csr(g, true);
	nlohmann::json j = {{"nodes", g.n}, {"edges", g.edges()}, {"synth_and_csr_s", secs(t0)}};
	PageGeometry geo;
	Layout metis;
	for (const auto &m : layout_methods()) {
		if (m == "metis" && !have_metis())
			continue;
		Layout l = build_layout(m, g, sym, geo, 1);
		j["layout_s"][m] = l.build_seconds;
		if (m == "metis" || (!have_metis() && m == "bfs"))
			metis = l;
	}
	for (const char *kind : {"neighbor", "page", "fim"}) {
		SamplerOptions o;
		o.kind = kind;
		for (int th : {1, 2}) {
			if (th == 2 && kind == std::string("fim"))
				break; // built in order: one thread
			EpochIo r = sample_epoch(g, sym, metis, geo, o, "", th, 0, 0);
			j["sampler"][kind][fmt::format("threads_{}", th)] = double(r.batches) / r.wall_seconds;
		}
	}
	// Training steps on page batches: forward, NLL on the supervised nodes, backward, Adam.
	SamplerOptions o;
	o.kind = "page";
	Sampler smp(g, sym, metis, geo, o);
	smp.prepare_epoch(0);
	torch::manual_seed(0);
	GraphSage model(17, 128, 2);
	// knlp's optimizer, as the GNN trainer runs it (the loop's), set up as the eager
	// reference's Adam (lr 3e-3, coupled weight decay 5e-7).
	OptimizerOptions oo;
	oo.kind = OptimKind::Adam, oo.name = "adam", oo.lr = 3e-3, oo.weight_decay = 5e-7;
	BenchOptimizer adam(*model, oo);
	std::vector<GnnBatch> batches;
	int64_t nb = std::min<int64_t>(smp.batches(), 40), nn = 0, ne = 0;
	for (int64_t b = 0; b < nb; b++) {
		batches.push_back(smp.make(b));
		nn += int64_t(batches.back().nodes.size()), ne += int64_t(batches.back().esrc.size());
	}
	bool bf16 = false; // KNLP_BENCH_BF16: also timed under CPU bf16 autocast, as the GNN trainer runs it
	auto step = [&](GnnBatch &bt) {
		std::vector<float> x(bt.nodes.size() * 17);
		for (size_t i = 0; i < bt.nodes.size(); i++)
			std::copy_n(&g.x[size_t(bt.nodes[i] * 17)], 17, &x[i * 17]);
		auto xt = torch::from_blob(x.data(), {int64_t(bt.nodes.size()), 17});
		auto src = torch::from_blob(bt.esrc.data(), {int64_t(bt.esrc.size())}, torch::kLong);
		auto dst = torch::from_blob(bt.edst.data(), {int64_t(bt.edst.size())}, torch::kLong);
		auto sup = torch::from_blob(bt.supervised.data(), {int64_t(bt.supervised.size())}, torch::kLong);
		std::vector<int64_t> ys;
		for (int64_t i : bt.supervised)
			ys.push_back(g.y[size_t(bt.nodes[size_t(i)])]);
		torch::Tensor out;
		{
			compat::AutocastGuard ag(torch::kCPU, bf16, torch::kBFloat16);
			out = model->forward(xt, src, dst).to(torch::kFloat);
		}
		auto loss = torch::nll_loss(out.index_select(0, sup), torch::tensor(ys));
		loss.backward();
		adam.step(3e-3, false);
	};
	auto steps_per_sec = [&] { // 3 warm-up steps, then every batch once
		for (int w = 0; w < 3; w++)
			step(batches[size_t(w)]);
		auto t = std::chrono::steady_clock::now();
		for (auto &bt : batches)
			step(bt);
		return double(nb) / secs(t);
	};
	j["train_steps_per_sec"] = steps_per_sec();
	if (std::getenv("KNLP_BENCH_BF16")) {
		bf16 = true;
		j["train_steps_per_sec_bf16"] = steps_per_sec();
	}
	j["batch_nodes"] = double(nn) / double(nb);
	j["batch_edges"] = double(ne) / double(nb);
	j["batch_supervised"] = [&] {
		double s = 0;
		for (auto &b : batches)
			s += double(b.supervised.size());
		return s / double(nb);
	}();
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

// One bf16 product with a float32 B that is cold (copies of it rotated past the caches, as
// a training step meets its weights): knlp's product (models/gemm.h) against libtorch's
// autocast path (B cast to bf16, then the product). knlp_bench product TA TB M N K A16
// C16 REPS: A is M x K (K x M when TA) in bf16 when A16, C is bf16 when C16.
static int bench_product(char **a)
{
	const bool ta = std::atoi(a[0]), tb = std::atoi(a[1]), a16 = std::atoi(a[5]), c16 = std::atoi(a[6]);
	const int64_t m = std::atoll(a[2]), n = std::atoll(a[3]), k = std::atoll(a[4]);
	const int reps = std::atoi(a[7]);
	if (m < 1 || n < 1 || k < 1 || reps < 1) {
		std::fprintf(stderr, "knlp_bench product: M, N, K and REPS must be positive\n");
		return 2;
	}
	if (!bf16_gemm_available()) {
		std::fprintf(stderr, "knlp_bench product: this CPU has no AVX512-BF16 (knlp's bf16 product)\n");
		return 3;
	}
	torch::manual_seed(0);
	auto A = torch::randn({ta ? k : m, ta ? m : k}).to(a16 ? torch::kBFloat16 : torch::kFloat);
	const int64_t copies = std::max<int64_t>(2, (int64_t(512) << 20) / (4 * n * k) + 1);
	std::vector<torch::Tensor> Bs;
	for (int64_t i = 0; i < copies; i++)
		Bs.push_back(torch::randn({tb ? n : k, tb ? k : n}));
	auto C = torch::empty({m, n}, c16 ? torch::kBFloat16 : torch::kFloat);
	auto A16 = A.to(torch::kBFloat16);
	auto opA = ta ? A16.t() : A16;
	std::vector<double> own, lib;
	for (int r = 0; r < reps; r++) {
		const auto &B = Bs[r % copies];
		auto t0 = std::chrono::steady_clock::now();
		gemm_bf16(ta, tb, m, n, k, A.data_ptr(), a16, ta ? m : k, B.data_ptr(), false, tb ? k : n, C.data_ptr(),
			  c16, n);
		auto t1 = std::chrono::steady_clock::now();
		// Another copy for libtorch, so that its B is as cold as knlp's was.
		auto B16 = Bs[(r + copies / 2) % copies].to(torch::kBFloat16);
		auto L = torch::mm(opA, tb ? B16.t() : B16);
		if (!c16)
			L = L.to(torch::kFloat);
		auto t2 = std::chrono::steady_clock::now();
		own.push_back(std::chrono::duration<double>(t1 - t0).count());
		lib.push_back(std::chrono::duration<double>(t2 - t1).count());
	}
	std::sort(own.begin(), own.end());
	std::sort(lib.begin(), lib.end());
	const double o = own[own.size() / 2], l = lib[lib.size() / 2], flop = 2.0 * double(m) * double(n) * double(k);
	nlohmann::json j = {{"m", m},
			    {"n", n},
			    {"k", k},
			    {"ta", ta},
			    {"tb", tb},
			    {"a_bf16", a16},
			    {"c_bf16", c16},
			    {"b_copies", copies},
			    {"knlp_ms", o * 1e3},
			    {"knlp_gflops", flop / o / 1e9},
			    {"libtorch_ms", l * 1e3},
			    {"libtorch_gflops", flop / l / 1e9},
			    {"speedup", l / o},
			    {"threads", torch::get_num_threads()}};
	std::printf("%s\n", j.dump().c_str());
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		std::fprintf(stderr, "usage: knlp_bench train|optim|tokenize ...\n");
		return 2;
	}
	const char *threads = std::getenv("KNLP_BENCH_THREADS");
	tune_allocator(/*training=*/true); // the benchmarks time training steps, as knlp train runs them
	torch::set_num_threads(threads ? std::atoi(threads) : 2);
	if (!std::strcmp(argv[1], "train") && argc == 9)
		return bench_train(argv + 2);
	if (!std::strcmp(argv[1], "vision") && argc >= 5)
		return bench_vision(argc - 2, argv + 2);
	if (!std::strcmp(argv[1], "gemm") && argc == 6)
		return bench_gemm(argv + 2);
	if (!std::strcmp(argv[1], "product") && argc == 10)
		return bench_product(argv + 2);
	if (!std::strcmp(argv[1], "kernels") && argc == 7)
		return bench_kernels(argv + 2);
	if (!std::strcmp(argv[1], "attention") && argc == 8)
		return bench_attention(argv + 2);
	if (!std::strcmp(argv[1], "optim") && (argc == 3 || argc == 4))
		return bench_optim(argv + 2);
	if (!std::strcmp(argv[1], "pool") && argc == 3)
		return bench_pool(argv + 2);
	if (!std::strcmp(argv[1], "quant") && argc == 2)
		return bench_quant();
	if (!std::strcmp(argv[1], "fim") && argc == 8)
		return bench_fim(argv + 2);
	if (!std::strcmp(argv[1], "gnn") && argc == 3)
		return bench_gnn(argv + 2);
	if (!std::strcmp(argv[1], "select") && argc == 3)
		return bench_select(argv + 2);
	if (!std::strcmp(argv[1], "tokenize") && argc >= 4)
		return bench_tokenize(argc - 2, argv + 2);
	std::fprintf(stderr, "knlp_bench: bad arguments\n");
	return 2;
}
