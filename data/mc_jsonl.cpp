#include "data/mc_jsonl.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace knlp {

std::vector<MCItem> parse_mc_jsonl(const std::string &text, const std::string &origin)
{
	std::vector<MCItem> out;
	std::istringstream in(text);
	std::string line;
	int lineno = 0;
	while (std::getline(in, line)) {
		lineno++;
		if (line.find_first_not_of(" \t\r") == std::string::npos)
			continue;
		nlohmann::json j;
		try {
			j = nlohmann::json::parse(line);
		} catch (const std::exception &) {
			fail("{}:{}: not a JSON object", origin, lineno);
		}
		if (!j.is_object())
			fail("{}:{}: not a JSON object", origin, lineno);
		MCItem it;
		it.line = lineno;
		if (!j.contains("ctx") || !j["ctx"].is_string())
			fail("{}:{}: missing string field \"ctx\"", origin, lineno);
		it.ctx = j["ctx"].get<std::string>();
		if (!j.contains("endings") || !j["endings"].is_array() || j["endings"].size() < 2)
			fail("{}:{}: \"endings\" must be an array of at least two strings", origin, lineno);
		for (const auto &e : j["endings"]) {
			if (!e.is_string())
				fail("{}:{}: \"endings\" must be an array of at least two strings", origin, lineno);
			it.endings.push_back(e.get<std::string>());
		}
		if (!j.contains("label"))
			fail("{}:{}: missing field \"label\"", origin, lineno);
		const auto &l = j["label"];
		long long v = 0;
		if (l.is_number_integer()) {
			v = l.get<long long>();
		} else if (l.is_string()) {
			const std::string s = l.get<std::string>();
			char *end = nullptr;
			errno = 0;
			v = std::strtoll(s.c_str(), &end, 10);
			if (s.empty() || *end || errno == ERANGE)
				fail("{}:{}: \"label\" '{}' is not a number", origin, lineno, s);
		} else {
			fail("{}:{}: \"label\" must be a number", origin, lineno);
		}
		// Checked before narrowing, so 2^32 cannot wrap to ending 0.
		if (v < 0 || v >= static_cast<long long>(it.endings.size()))
			fail("{}:{}: label {} is outside the {} endings", origin, lineno, v, it.endings.size());
		it.label = static_cast<int>(v);
		out.push_back(std::move(it));
	}
	if (out.empty())
		fail("{}: no examples", origin);
	return out;
}

std::vector<MCItem> read_mc_jsonl(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	if (!f)
		fail("{}: cannot open the multiple-choice file", path);
	std::stringstream ss;
	ss << f.rdbuf();
	return parse_mc_jsonl(ss.str(), path);
}

std::string mc_jsonl(const std::vector<MCItem> &items)
{
	std::string out;
	for (const auto &it : items) {
		nlohmann::json j = {{"ctx", it.ctx}, {"endings", it.endings}, {"label", it.label}};
		out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
	}
	return out;
}

} // namespace knlp
