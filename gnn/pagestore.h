// Node features on disk in layout order, read back a page at a time: the measured side of the
// read-amplification question. Slot s holds the F float32 features of node order[s] at byte
// s * 4F; a fetch reads every page that overlaps a requested record (runs of consecutive
// pages coalesced into one read) with O_DIRECT, so the page cache cannot hide the I/O. Where
// the filesystem refuses O_DIRECT (tmpfs), reads fall back to buffered I/O and say so.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gnn/graph.h"
#include "gnn/layout.h"

namespace knlp {

struct FetchStats {
	int64_t pages = 0, reads = 0, bytes = 0;
	double seconds = 0;
};

class PageStore {
public:
	// Write the features of g in the order of l to `path` (atomically), then open it for reads.
	PageStore(const std::string &path, const Graph &g, const Layout &l, const PageGeometry &geo);
	~PageStore();
	PageStore(const PageStore &) = delete;
	PageStore &operator=(const PageStore &) = delete;
	// Features of `nodes` into out[i * F ...]; thread-safe.
	FetchStats fetch(const std::vector<int64_t> &nodes, float *out) const;
	bool direct() const { return direct_; }
	const std::string &note() const { return note_; }
	const std::string &path() const { return path_; }

private:
	std::string path_, note_;
	int fd_ = -1;
	bool direct_ = false;
	int F_ = 0;
	int64_t rec_ = 0, page_ = 0;
	const std::vector<int64_t> &pos_;
};

} // namespace knlp
