#include "core/fsutil.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <ftw.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

namespace knlp {

int remove_stale_temps(const std::string &dir, const std::string &prefix)
{
	int n = 0;
	std::error_code ec;
	for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
		std::string name = it->path().filename().string();
		size_t k = name.rfind(".tmp.");
		if (k == std::string::npos || k + 5 >= name.size() || name.compare(0, prefix.size(), prefix) != 0)
			continue;
		std::string pid = name.substr(k + 5);
		if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9)
			continue;
		pid_t p = static_cast<pid_t>(std::stol(pid));
		if (p == getpid() || (::kill(p, 0) != 0 && errno == ESRCH)) {
			if (std::remove(it->path().c_str()) == 0)
				n++;
		}
	}
	return n;
}

AtomicFile::AtomicFile(const std::string &path) : path_(path)
{
	tmp_ = fmt::format("{}.tmp.{}", path, getpid());
	f_ = std::fopen(tmp_.c_str(), "wb");
	if (!f_)
		fail("{}: cannot create ({})", path, std::strerror(errno));
}

AtomicFile::~AtomicFile()
{
	if (f_) {
		std::fclose(f_);
		std::remove(tmp_.c_str());
	}
}

void AtomicFile::write(const void *data, size_t n)
{
	if (n && std::fwrite(data, 1, n, f_) != n)
		fail("{}: write failed ({})", path_, std::strerror(errno));
	written_ += n;
}

void AtomicFile::commit()
{
	if (fault_enospc()) {
		std::fclose(f_);
		f_ = nullptr;
		std::remove(tmp_.c_str());
		fail("{}: cannot flush to disk ({})", path_, std::strerror(ENOSPC));
	}
	if (std::fflush(f_) != 0 || fsync(fileno(f_)) != 0)
		fail("{}: cannot flush to disk ({})", path_, std::strerror(errno));
	int rc = std::fclose(f_);
	f_ = nullptr;
	if (rc != 0) {
		std::remove(tmp_.c_str());
		fail("{}: close failed ({})", path_, std::strerror(errno));
	}
	if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
		int e = errno;
		std::remove(tmp_.c_str());
		fail("{}: cannot rename into place ({})", path_, std::strerror(e));
	}
	fsync_dir(dirname_of(path_));
}

void write_file_atomic(const std::string &path, const std::string &data)
{
	AtomicFile f(path);
	f.write(data);
	f.commit();
}

namespace {
// The file opened for reading and its stat; errors name the file.
int open_for_read(const std::string &path, struct stat *st)
{
	int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("{}: cannot read ({})", path, std::strerror(errno));
	if (::fstat(fd, st) != 0) {
		int e = errno;
		::close(fd);
		fail("{}: cannot read ({})", path, std::strerror(e));
	}
	return fd;
}
} // namespace

std::string read_file(const std::string &path)
{
	// One allocation of the file's size and plain read()s: a stringstream grows by doubling
	// and copies again on str(), which cost seconds on a few hundred MB (GGUF files).
	struct stat st;
	int fd = open_for_read(path, &st);
	const bool regular = S_ISREG(st.st_mode);
	std::string out;
	if (regular)
		out.resize(size_t(st.st_size));
	size_t got = 0;
	for (;;) {
		if (got == out.size()) {
			if (regular)
				break; // the size fstat gave (a file growing meanwhile is read as it was)
			out.resize(std::max<size_t>(out.size() * 2, 1 << 16));
		}
		ssize_t r = ::read(fd, out.data() + got, out.size() - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			::close(fd);
			fail("{}: cannot read ({})", path, std::strerror(e));
		}
		if (r == 0)
			break;
		got += size_t(r);
	}
	::close(fd);
	out.resize(got);
	return out;
}

MappedFile::MappedFile(const std::string &path)
{
	struct stat st;
	int fd = open_for_read(path, &st);
	if (!S_ISREG(st.st_mode)) {
		::close(fd);
		fail("{}: cannot read (not a regular file)", path);
	}
	n_ = size_t(st.st_size);
	if (n_ > 0) {
		p_ = ::mmap(nullptr, n_, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p_ == MAP_FAILED) {
			int e = errno;
			::close(fd);
			p_ = nullptr;
			fail("{}: cannot map ({})", path, std::strerror(e));
		}
	}
	::close(fd);
}

MappedFile::~MappedFile()
{
	if (p_)
		::munmap(p_, n_);
}

bool file_exists(const std::string &path)
{
	struct stat st;
	return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string &path)
{
	struct stat st;
	return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string &path)
{
	std::error_code ec;
	std::filesystem::create_directories(path, ec);
	if (ec || !is_dir(path))
		fail("{}: cannot create folder ({})", path, ec ? ec.message() : "not a folder");
}

void fsync_dir(const std::string &dir)
{
	int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		::fsync(fd);
		::close(fd);
	}
}

void remove_tree(const std::string &path)
{
	// Depth-first with nftw(3), not std::filesystem::remove_all: in knlp built with GCC 13
	// against PyTorch 2.11's CUDA libtorch, remove_all died with SIGSEGV at the first
	// checkpoint retention (the same call in a program without libtorch ran). Links are
	// removed, not followed.
	struct stat st;
	if (::lstat(path.c_str(), &st) != 0)
		return;
	::nftw(
		path.c_str(),
		[](const char *p, const struct stat *, int, struct FTW *) {
			::remove(p);
			return 0;
		},
		32, FTW_DEPTH | FTW_PHYS);
}

std::string dirname_of(const std::string &path)
{
	auto p = std::filesystem::path(path).parent_path().string();
	return p.empty() ? "." : p;
}

std::string join_path(const std::string &a, const std::string &b)
{
	return (std::filesystem::path(a) / b).string();
}

uint64_t file_size(const std::string &path)
{
	struct stat st;
	if (::stat(path.c_str(), &st) != 0)
		fail("{}: cannot stat ({})", path, std::strerror(errno));
	return static_cast<uint64_t>(st.st_size);
}

namespace {

// "label" or "label#N" (the N-th time the label is reached; 1 when absent).
bool fault_spec_matches(const char *spec, const char *label, int *nth)
{
	std::string w(spec);
	*nth = 1;
	size_t hash = w.find('#');
	if (hash != std::string::npos) {
		*nth = std::atoi(w.c_str() + hash + 1);
		w = w.substr(0, hash);
	}
	return w == label;
}

} // namespace

void fault_point(const char *label)
{
	// KNLP_FAULT_KILL_AT=label or label#N; with KNLP_FAULT_RANK=r only in the process whose
	// RANK is r (data-parallel crash tests).
	static const char *want = [] {
		const char *w = std::getenv("KNLP_FAULT_KILL_AT"), *r = std::getenv("KNLP_FAULT_RANK"),
			   *me = std::getenv("RANK");
		return r && std::string(r) != std::string(me ? me : "0") ? nullptr : w;
	}();
	static int hits = 0;
	int nth;
	if (want && fault_spec_matches(want, label, &nth) && ++hits == nth)
		::kill(::getpid(), SIGKILL);
}

bool fault_enospc()
{
	// KNLP_FAULT_ENOSPC_AT=N: the N-th atomic commit of this process fails as if the disk
	// were full.
	static const char *want = std::getenv("KNLP_FAULT_ENOSPC_AT");
	static int hits = 0;
	return want && ++hits == std::atoi(want);
}

bool fault_time_up(const char *label)
{
	static const char *want = std::getenv("KNLP_FAULT_TIME_UP_AT");
	static int hits = 0;
	int nth;
	return want && fault_spec_matches(want, label, &nth) && ++hits >= nth;
}

bool fault_nan(const char *label)
{
	static const char *want = std::getenv("KNLP_FAULT_NAN_AT");
	static int hits = 0;
	int nth;
	return want && fault_spec_matches(want, label, &nth) && ++hits == nth;
}

nlohmann::json read_json_file(const std::string &path)
{
	const std::string text = read_file(path);
	try {
		return nlohmann::json::parse(text);
	} catch (const nlohmann::json::exception &e) {
		fail("{}: malformed JSON ({})", path, e.what());
	}
}

} // namespace knlp
