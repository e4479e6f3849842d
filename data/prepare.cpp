#include "data/prepare.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/progress.h"
#include "core/sha256.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "data/tokens.h"

namespace knlp {

namespace {

// Little-endian uint16 or uint32 writer into an AtomicFile with a running SHA-256.
struct TokenSink {
	AtomicFile file;
	Sha256 sha;
	uint64_t count = 0;
	int width;
	std::vector<uint8_t> buf;
	TokenSink(const std::string &path, int width) : file(path), width(width) {}
	void put(const uint32_t *ids, size_t n)
	{
		buf.resize(width * n);
		for (size_t i = 0; i < n; i++)
			for (int b = 0; b < width; b++)
				buf[width * i + b] = static_cast<uint8_t>(ids[i] >> (8 * b));
		file.write(buf.data(), buf.size());
		sha.update(buf.data(), buf.size());
		count += n;
	}
};

} // namespace

// Long because it is one pipeline whose files must appear in a fixed order: meta.json
// removed first, every token into a temporary stream (pass 1), the stream split into
// train.bin and val.bin (pass 2), meta.json written last.
PrepareResult prepare_corpus(const PrepareOptions &opt)
{
	if (opt.val_percent < 1 || opt.val_percent > 50)
		fail("prepare: --val-percent {} is outside [1, 50]", opt.val_percent);
	auto t0 = std::chrono::steady_clock::now();
	std::string root = resolve_corpus(opt.corpus);
	auto files = list_corpus(root);
	auto proto = make_tokenizer(opt.tokenizer, opt.vocab_dir);
	const int width = token_bytes_for(proto->vocab_size());
	make_dirs(opt.out_dir);
	// No meta.json while the folder is being rewritten: a reader never mistakes a half-done
	// preparation for a complete one.
	std::remove(join_path(opt.out_dir, "meta.json").c_str());
	remove_stale_temps(opt.out_dir); // what a killed preparation left
	fsync_dir(opt.out_dir);

	int nthreads = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
	std::vector<std::unique_ptr<Tokenizer>> toks;
	for (int i = 0; i < nthreads; i++)
		toks.push_back(proto->clone());

	uint64_t total_disk = 0;
	for (const auto &f : files)
		total_disk += f.disk_bytes;

	// Pass 1: every token into one temporary stream (the split point is known only at the end).
	std::string all_path = join_path(opt.out_dir, "all.bin");
	PrepareResult res;
	res.files = files.size();
	Sha256 source;
	Progress progress("prepare", total_disk / 1e6, "MB");
	{
		TokenSink all(all_path, width);
		const size_t batch_bytes = 16u << 20;
		size_t next_file = 0;
		uint64_t disk_done = 0;
		std::vector<std::string> texts;
		std::vector<std::vector<uint32_t>> ids;
		std::vector<size_t> file_of;
		while (next_file < files.size()) {
			// Read a batch of whole documents (or pieces of a large one) in order.
			texts.clear();
			file_of.clear();
			size_t bytes = 0;
			while (next_file < files.size() && bytes < batch_bytes) {
				const CorpusFile &f = files[next_file];
				DocumentReader reader(f);
				std::string piece;
				source.update(f.relpath);
				source.update("\0", 1);
				while (reader.next(piece)) {
					source.update(piece);
					bytes += piece.size();
					texts.push_back(std::move(piece));
					file_of.push_back(next_file);
				}
				disk_done += f.disk_bytes;
				next_file++;
			}
			res.text_bytes += bytes;
			ids.assign(texts.size(), {});
			std::atomic<size_t> cursor{0};
			std::vector<std::thread> workers;
			std::exception_ptr err;
			std::mutex err_mu;
			for (int w = 0; w < nthreads; w++)
				workers.emplace_back([&, w] {
					try {
						for (size_t i; (i = cursor.fetch_add(1)) < texts.size();)
							toks[w]->encode(texts[i], ids[i]);
					} catch (...) {
						std::lock_guard<std::mutex> g(err_mu);
						err = std::current_exception();
					}
				});
			for (auto &t : workers)
				t.join();
			if (err)
				std::rethrow_exception(err);
			for (size_t i = 0; i < texts.size(); i++) {
				all.put(ids[i].data(), ids[i].size());
				bool doc_end = i + 1 == texts.size() || file_of[i + 1] != file_of[i];
				// Documents are separated by end-of-text (GPT-2) or nothing (bytes).
				if (doc_end && proto->eot_id() >= 0) {
					uint32_t eot = static_cast<uint32_t>(proto->eot_id());
					all.put(&eot, 1);
				}
			}
			if (!opt.quiet)
				progress.update(disk_done / 1e6);
		}
		all.file.commit();
		res.source_digest = source.hex();
		uint64_t total = all.count;
		if (total < 2)
			fail("{}: corpus produced only {} tokens", root, total);
		res.val_tokens = std::max<uint64_t>(1, total * static_cast<uint64_t>(opt.val_percent) / 100);
		res.train_tokens = total - res.val_tokens;
	}
	if (!opt.quiet)
		progress.finish(fmt::format("{} files, {:.1f} MB of text", files.size(), res.text_bytes / 1e6));

	// Pass 2: split the stream into train.bin (first part) and val.bin (last part).
	{
		FILE *in = std::fopen(all_path.c_str(), "rb");
		if (!in)
			fail("{}: cannot reopen ({})", all_path, std::strerror(errno));
		std::vector<uint8_t> buf(1 << 22);
		auto copy = [&](const std::string &path, uint64_t tokens, std::string &digest) {
			AtomicFile out(path);
			Sha256 sha;
			uint64_t left = tokens * width;
			while (left) {
				size_t n = std::fread(buf.data(), 1, std::min<uint64_t>(left, buf.size()), in);
				if (n == 0)
					fail("{}: unexpected end while splitting", all_path);
				out.write(buf.data(), n);
				sha.update(buf.data(), n);
				left -= n;
			}
			out.commit();
			digest = sha.hex();
		};
		copy(join_path(opt.out_dir, "train.bin"), res.train_tokens, res.train_sha256);
		copy(join_path(opt.out_dir, "val.bin"), res.val_tokens, res.val_sha256);
		std::fclose(in);
		std::remove(all_path.c_str());
	}
	res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

	nlohmann::json meta = {
		{"format", width == 2 ? "nanogpt-uint16-le" : "uint32-le"},
		{"token_bytes", width},
		{"tokenizer", proto->name()},
		{"vocab_size", proto->vocab_size()},
		{"eot_token", proto->eot_id()},
		{"train_tokens", res.train_tokens},
		{"val_tokens", res.val_tokens},
		{"val_percent", opt.val_percent},
		{"source", root},
		{"source_files", res.files},
		{"source_text_bytes", res.text_bytes},
		{"source_digest", res.source_digest},
		{"train_sha256", res.train_sha256},
		{"val_sha256", res.val_sha256},
	};
	// meta.json goes last: its presence marks a complete preparation.
	write_file_atomic(join_path(opt.out_dir, "meta.json"), meta.dump(2) + "\n");
	return res;
}

} // namespace knlp
