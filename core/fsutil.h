// File-system helpers. Every output knlp writes goes through AtomicFile: a temporary name
// in the same folder, fsync, rename, fsync of the folder. A reader therefore sees either the
// previous complete file or the new complete file, never a torn one, even after SIGKILL or
// power loss.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace knlp {

class AtomicFile {
public:
	explicit AtomicFile(const std::string &path);
	~AtomicFile(); // removes the temporary file when commit() was not reached
	AtomicFile(const AtomicFile &) = delete;
	AtomicFile &operator=(const AtomicFile &) = delete;

	void write(const void *data, size_t n);
	void write(const std::string &s) { write(s.data(), s.size()); }
	uint64_t bytes_written() const { return written_; }
	void commit(); // flush, fsync, rename over the final name, fsync the folder

private:
	std::string path_, tmp_;
	FILE *f_ = nullptr;
	uint64_t written_ = 0;
};

void write_file_atomic(const std::string &path, const std::string &data);
std::string read_file(const std::string &path);
// A whole file mapped read-only (private): no copy, pages read on first touch. An empty file
// maps to an empty view. Errors name the file.
class MappedFile {
public:
	explicit MappedFile(const std::string &path);
	~MappedFile();
	MappedFile(const MappedFile &) = delete;
	MappedFile &operator=(const MappedFile &) = delete;
	std::string_view view() const { return {static_cast<const char *>(p_), n_}; }

private:
	void *p_ = nullptr;
	size_t n_ = 0;
};
// A JSON file; errors name the file (missing, unreadable, malformed).
nlohmann::json read_json_file(const std::string &path);
bool file_exists(const std::string &path);
bool is_dir(const std::string &path);
void make_dirs(const std::string &path);
void fsync_dir(const std::string &dir);
void remove_tree(const std::string &path);
// Remove the temporary files AtomicFile leaves in `dir` when its process was killed
// (NAME.tmp.PID whose PID no longer runs), only those whose NAME starts with `prefix`;
// returns how many were removed.
int remove_stale_temps(const std::string &dir, const std::string &prefix = "");
std::string dirname_of(const std::string &path);
std::string join_path(const std::string &a, const std::string &b);
uint64_t file_size(const std::string &path);
// Crash-test hook: when KNLP_FAULT_KILL_AT names a label passed to fault_point(), the
// process kills itself with SIGKILL there (used by the resume and fault-injection tests).
void fault_point(const char *label);
// Disk-full hook: true on the N-th atomic commit when KNLP_FAULT_ENOSPC_AT=N (tests only).
bool fault_enospc();
// Time-budget hook: true from the N-th time `label` is reached when
// KNLP_FAULT_TIME_UP_AT=label#N, as if CONFIG_MAX_TIME had run out there (tests of the
// time-budget stop that do not depend on the machine's speed).
bool fault_time_up(const char *label);
// Numerics-test hook: KNLP_FAULT_NAN_AT=label#N makes the N-th call with this label return
// true (once): the trainer then poisons that micro-batch's loss with NaN.
bool fault_nan(const char *label);

} // namespace knlp
