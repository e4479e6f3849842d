#include "data/corpus.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "core/fsutil.h"

namespace knlp {

namespace fs = std::filesystem;

static const char *k_linux_doc = "/usr/share/doc/linux-doc-6.1/Documentation";

std::string resolve_corpus(const std::string &spec)
{
	if (spec == "linux-doc") {
		if (!is_dir(k_linux_doc))
			fail("{}: the default corpus is missing; install Debian's linux-doc-6.1 (`make deps`)",
			     k_linux_doc);
		return k_linux_doc;
	}
	return spec;
}

static bool is_text_name(const std::string &name, bool *gz)
{
	std::string n = name;
	*gz = n.size() > 3 && n.compare(n.size() - 3, 3, ".gz") == 0;
	if (*gz)
		n = n.substr(0, n.size() - 3);
	for (const char *ext : {".txt", ".rst", ".md"}) {
		size_t l = std::strlen(ext);
		if (n.size() > l && n.compare(n.size() - l, l, ext) == 0)
			return true;
	}
	return false;
}

std::vector<CorpusFile> list_corpus(const std::string &root)
{
	std::error_code ec;
	auto st = fs::status(root, ec);
	if (ec || !fs::exists(st))
		fail("{}: corpus path does not exist", root);
	std::vector<CorpusFile> out;
	if (fs::is_regular_file(st)) {
		bool gz = false;
		is_text_name(root, &gz);
		out.push_back({root, fs::path(root).filename().string(), file_size(root), gz});
		return out;
	}
	// Symbolic links are skipped: Debian's tree links old names to files it also ships.
	for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
	     it.increment(ec)) {
		if (it->is_symlink() || !it->is_regular_file())
			continue;
		bool gz;
		std::string name = it->path().filename().string();
		if (!is_text_name(name, &gz))
			continue;
		out.push_back({it->path().string(), fs::relative(it->path(), root).string(),
			       static_cast<uint64_t>(it->file_size()), gz});
	}
	if (ec)
		fail("{}: cannot list corpus ({})", root, ec.message());
	if (out.empty())
		fail("{}: holds no text files (.txt, .rst, .md or their .gz forms)", root);
	std::sort(out.begin(), out.end(),
		  [](const CorpusFile &a, const CorpusFile &b) { return a.relpath < b.relpath; });
	return out;
}

DocumentReader::DocumentReader(const CorpusFile &f, size_t chunk) : f_(f), chunk_(chunk)
{
	fd_ = ::open(f.path.c_str(), O_RDONLY);
	if (fd_ < 0)
		fail("{}: cannot open ({})", f.path, std::strerror(errno));
	if (f.gz) {
		gz_ = gzdopen(fd_, "rb");
		if (!gz_)
			fail("{}: cannot open as gzip", f.path);
		gzbuffer(static_cast<gzFile>(gz_), 1 << 17);
	}
}

DocumentReader::~DocumentReader()
{
	if (gz_)
		gzclose(static_cast<gzFile>(gz_)); // also closes fd_
	else if (fd_ >= 0)
		::close(fd_);
}

size_t DocumentReader::raw_read(char *buf, size_t n)
{
	if (!gz_) {
		ssize_t r = ::read(fd_, buf, n);
		if (r < 0)
			fail("{}: read error ({})", f_.path, std::strerror(errno));
		return static_cast<size_t>(r);
	}
	gzFile g = static_cast<gzFile>(gz_);
	int r = gzread(g, buf, static_cast<unsigned>(n));
	int err = Z_OK;
	const char *msg = gzerror(g, &err);
	if (r < 0 || (err != Z_OK && err != Z_STREAM_END))
		fail("{}: corrupt or truncated gzip data ({})", f_.path, msg ? msg : "unknown error");
	if (r == 0 && !gzeof(g))
		fail("{}: corrupt or truncated gzip data", f_.path);
	return static_cast<size_t>(r);
}

uint64_t DocumentReader::disk_bytes_consumed() const
{
	if (gz_)
		return static_cast<uint64_t>(gzoffset(static_cast<gzFile>(gz_)));
	off_t off = ::lseek(fd_, 0, SEEK_CUR);
	return off < 0 ? 0 : static_cast<uint64_t>(off);
}

bool DocumentReader::next(std::string &out)
{
	out.swap(carry_);
	carry_.clear();
	while (!eof_ && out.size() < chunk_) {
		size_t old = out.size();
		out.resize(old + (1 << 18));
		size_t r = raw_read(&out[old], 1 << 18);
		out.resize(old + r);
		if (r == 0)
			eof_ = true;
	}
	if (!eof_) {
		// Cut after a newline that is followed by a non-whitespace byte.
		size_t cut = std::string::npos;
		for (size_t i = out.size() - 1; i > 0; i--) {
			unsigned char c = out[i];
			if (out[i - 1] == '\n' && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' &&
			    c != '\f' && c < 0x80) {
				cut = i;
				break;
			}
		}
		if (cut != std::string::npos) {
			carry_ = out.substr(cut);
			out.resize(cut);
		}
	}
	return !out.empty() || !carry_.empty();
}

std::string read_document(const CorpusFile &f)
{
	DocumentReader r(f, SIZE_MAX / 2);
	std::string all, piece;
	while (r.next(piece))
		all += piece;
	return all;
}

} // namespace knlp
