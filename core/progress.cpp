#include "core/progress.h"

#include <cmath>
#include <cstdio>
#include <unistd.h>

#include <fmt/format.h>

namespace knlp {

namespace {
bool &quiet()
{
	static bool q = false;
	return q;
}
} // namespace

void Progress::set_quiet(bool q)
{
	quiet() = q;
}

Progress::Progress(std::string what, double total, std::string unit)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), start_(std::chrono::steady_clock::now()),
      last_(start_ - std::chrono::hours(1)), tty_(isatty(fileno(stderr)))
{
}

double Progress::elapsed() const
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_eta(double s)
{
	if (!std::isfinite(s) || s < 0)
		return "--:--";
	long t = std::lround(s);
	if (t >= 3600)
		return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
	return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

void Progress::update(double done, const std::string &extra, bool force)
{
	done_ = done;
	if (quiet())
		return;
	auto now = std::chrono::steady_clock::now();
	double since = std::chrono::duration<double>(now - last_).count();
	if (!force && since < (tty_ ? 0.2 : 5.0))
		return;
	last_ = now;
	double el = elapsed();
	double rate = el > 0 ? done / el : 0;
	double eta = rate > 0 && total_ > 0 ? (total_ - done) / rate : NAN;
	std::string line;
	if (total_ > 0)
		line = fmt::format("{}: {:5.1f}% {:.4g} {}/s ETA {}", what_, 100.0 * done / total_, rate, unit_,
				   format_eta(eta));
	else
		line = fmt::format("{}: {:.4g} {}/s", what_, rate, unit_);
	if (!extra.empty())
		line += " | " + extra;
	if (tty_) {
		std::string pad = line.size() < last_len_ ? std::string(last_len_ - line.size(), ' ') : "";
		std::fprintf(stderr, "\r%s%s", line.c_str(), pad.c_str());
		last_len_ = line.size();
	} else {
		std::fprintf(stderr, "%s\n", line.c_str());
	}
	std::fflush(stderr);
}

void Progress::finish(const std::string &extra)
{
	if (quiet())
		return;
	update(done_, extra, true);
	if (tty_)
		std::fprintf(stderr, "\n");
}

} // namespace knlp
