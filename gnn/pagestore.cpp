#include "gnn/pagestore.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

PageStore::PageStore(const std::string &path, const Graph &g, const Layout &l, const PageGeometry &geo)
    : path_(path), F_(g.features), rec_(int64_t(g.features) * 4), page_(geo.page_bytes), pos_(l.pos)
{
	if (geo.record_bytes != rec_)
		fail("gnn page store: records are {} bytes ({} float32 features) but the page geometry says {}", rec_,
		     F_, geo.record_bytes);
	if (page_ % 512 != 0)
		fail("gnn page store: CONFIG_GNN_PAGE_BYTES={} must be a multiple of 512 for direct I/O", page_);
	int64_t bytes = g.n * rec_;
	bytes = (bytes + page_ - 1) / page_ * page_;
	std::string data(size_t(bytes), '\0');
	for (int64_t s = 0; s < g.n; s++)
		std::memcpy(&data[size_t(s * rec_)], &g.x[size_t(l.order[size_t(s)] * F_)], size_t(rec_));
	write_file_atomic(path, data);
	fd_ = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
	direct_ = fd_ >= 0;
	if (fd_ < 0) {
		note_ = std::string("O_DIRECT refused (") + std::strerror(errno) +
			"); buffered reads, the page cache may serve them";
		fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
		if (fd_ >= 0)
			::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED);
	}
	if (fd_ < 0)
		fail("{}: cannot open the feature store ({})", path, std::strerror(errno));
}

PageStore::~PageStore()
{
	if (fd_ >= 0)
		::close(fd_);
}

FetchStats PageStore::fetch(const std::vector<int64_t> &nodes, float *out) const
{
	FetchStats st;
	std::vector<int64_t> pages;
	pages.reserve(nodes.size() * 2);
	for (int64_t v : nodes) {
		int64_t b = pos_[size_t(v)] * rec_;
		for (int64_t p = b / page_; p <= (b + rec_ - 1) / page_; p++)
			pages.push_back(p);
	}
	std::sort(pages.begin(), pages.end());
	pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
	st.pages = int64_t(pages.size());
	st.bytes = st.pages * page_;
	void *raw = nullptr;
	if (posix_memalign(&raw, 4096, size_t(std::max<int64_t>(st.bytes, page_))) != 0)
		fail("gnn page store: out of memory for {} bytes", st.bytes);
	std::unique_ptr<char, decltype(&std::free)> buf(static_cast<char *>(raw), &std::free);
	auto t0 = std::chrono::steady_clock::now();
	for (size_t i = 0; i < pages.size();) {
		size_t j = i;
		while (j + 1 < pages.size() && pages[j + 1] == pages[j] + 1)
			j++;
		size_t len = (j - i + 1) * size_t(page_);
		char *dst = buf.get() + i * size_t(page_);
		off_t off = off_t(pages[i] * page_);
		size_t done = 0;
		while (done < len) {
			ssize_t r = ::pread(fd_, dst + done, len - done, off + off_t(done));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				fail("{}: read of {} bytes at offset {} failed ({})", path_, len - done,
				     off + off_t(done), r < 0 ? std::strerror(errno) : "unexpected end of file");
			done += size_t(r);
		}
		st.reads++;
		i = j + 1;
	}
	st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	for (size_t i = 0; i < nodes.size(); i++) {
		int64_t b = pos_[size_t(nodes[i])] * rec_;
		size_t k = size_t(std::lower_bound(pages.begin(), pages.end(), b / page_) - pages.begin());
		std::memcpy(out + i * size_t(F_), buf.get() + k * size_t(page_) + size_t(b % page_), size_t(rec_));
	}
	return st;
}

} // namespace knlp
