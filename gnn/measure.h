// One epoch of a sampler over a layout without training: the modelled read amplification and,
// through a page store, the measured bytes and fetch time (`knlp gnn ra`, `make bench`).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "gnn/graph.h"
#include "gnn/layout.h"
#include "gnn/sampler.h"

namespace knlp {

struct EpochIo {
	int64_t batches = 0, pages = 0, loaded = 0, supervised = 0, edges = 0;
	int64_t io_bytes = 0, io_pages = 0, io_reads = 0;
	double io_seconds = 0, sample_seconds = 0, wall_seconds = 0;
	double ra_fetch(const PageGeometry &g) const
	{
		return loaded ? double(pages) * double(g.page_bytes) / (double(loaded) * double(g.record_bytes)) : 0;
	}
	double ra_signal(const PageGeometry &g) const
	{
		return supervised ? double(pages) * double(g.page_bytes) / (double(supervised) * double(g.record_bytes))
				  : 0;
	}
	nlohmann::json to_json(const PageGeometry &g) const;
};

// Sample epoch `epoch` (at most max_batches when > 0) on `threads` threads; with a non-empty
// store_path the features are written there in layout order and every batch is fetched.
EpochIo sample_epoch(const Graph &g, const Csr &adj, const Layout &l, const PageGeometry &geo, const SamplerOptions &o,
		     const std::string &store_path, int threads, int64_t epoch = 0, int64_t max_batches = 0);

} // namespace knlp
