// A live progress line: done/total, rate, ETA and caller-supplied fields. On a terminal it
// redraws one line; otherwise (logs, CI) it prints a new line at most every few seconds.
#pragma once
#include <chrono>
#include <string>

namespace knlp {

class Progress {
public:
	Progress(std::string what, double total, std::string unit);
	// Report that `done` units are finished; `extra` is appended to the line.
	void update(double done, const std::string &extra = "", bool force = false);
	void finish(const std::string &extra = "");
	double elapsed() const;

	static std::string format_eta(double seconds);
	// Silence every progress line of this process (data-parallel ranks other than 0).
	static void set_quiet(bool q);

private:
	std::string what_, unit_;
	double total_;
	std::chrono::steady_clock::time_point start_, last_;
	bool tty_;
	double done_ = 0;
	size_t last_len_ = 0;
};

} // namespace knlp
