// Errors: every failure the user can cause is one KnlpError carrying one line of text that
// names the file (or symbol) and the problem. main() prints it and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace knlp {

class Error : public std::runtime_error {
public:
	explicit Error(const std::string &msg) : std::runtime_error(msg) {}
};

template <typename... Args> [[noreturn]] inline void fail(fmt::format_string<Args...> f, Args &&...args)
{
	throw Error(fmt::format(f, std::forward<Args>(args)...));
}

} // namespace knlp
