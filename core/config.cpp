#include "core/config.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"

namespace knlp {

static const std::vector<SymbolInfo> k_symbols = {
#include "symbols.inc"
};

const std::vector<SymbolInfo> &symbol_table() { return k_symbols; }

const SymbolInfo *find_symbol(const std::string &name)
{
	static const std::map<std::string, const SymbolInfo *> index = [] {
		std::map<std::string, const SymbolInfo *> m;
		for (const auto &s : k_symbols)
			m[s.name] = &s;
		return m;
	}();
	auto it = index.find(name);
	return it == index.end() ? nullptr : it->second;
}

const char *type_name(SymbolType t)
{
	switch (t) {
	case SymbolType::Bool: return "bool";
	case SymbolType::Int: return "int";
	case SymbolType::Float: return "float";
	case SymbolType::String: return "string";
	}
	return "?";
}

std::string config_quote(const std::string &s)
{
	std::string out = "\"";
	for (char c : s) {
		if (c == '"' || c == '\\')
			out += '\\';
		out += c;
	}
	return out + "\"";
}

static bool parse_ll(const std::string &s, long long &out)
{
	if (s.empty())
		return false;
	errno = 0;
	char *end = nullptr;
	out = std::strtoll(s.c_str(), &end, 0);
	return errno == 0 && end && *end == '\0';
}

static bool parse_double(const std::string &s, double &out)
{
	if (s.empty() || std::isspace(static_cast<unsigned char>(s[0])))
		return false;
	errno = 0;
	char *end = nullptr;
	out = std::strtod(s.c_str(), &end);
	return errno == 0 && end && *end == '\0' && std::isfinite(out);
}

// Undo .config string quoting; returns false when `raw` is not a well-formed quoted string.
static bool unquote(const std::string &raw, std::string &out)
{
	if (raw.size() < 2 || raw.front() != '"' || raw.back() != '"')
		return false;
	out.clear();
	for (size_t i = 1; i + 1 < raw.size(); i++) {
		char c = raw[i];
		if (c == '\\') {
			if (i + 2 >= raw.size())
				return false;
			out += raw[++i];
		} else if (c == '"') {
			return false;
		} else {
			out += c;
		}
	}
	return true;
}

Config::Config()
{
	for (const auto &s : k_symbols) {
		values_[s.name] = s.def;
		origins_[s.name] = Origin::Default;
	}
}

void Config::assign(const SymbolInfo &sym, const std::string &raw, const std::string &where, Origin o)
{
	std::string val;
	switch (sym.type) {
	case SymbolType::Bool:
		if (raw != "y" && raw != "n")
			fail("{}: CONFIG_{} is a bool and takes y or n, not '{}'", where, sym.name, raw);
		val = raw;
		break;
	case SymbolType::Int: {
		long long v;
		if (!parse_ll(raw, v))
			fail("{}: CONFIG_{} expects an integer, got '{}'", where, sym.name, raw);
		if (sym.has_range && (v < sym.lo || v > sym.hi))
			fail("{}: CONFIG_{}={} is outside its range [{}, {}]", where, sym.name, v, sym.lo, sym.hi);
		val = std::to_string(v);
		break;
	}
	case SymbolType::Float: {
		std::string s = raw;
		if (!raw.empty() && raw.front() == '"' && !unquote(raw, s))
			fail("{}: CONFIG_{} has a malformed quoted value {}", where, sym.name, raw);
		double d;
		if (!parse_double(s, d))
			fail("{}: CONFIG_{} expects a number (a quoted string such as \"6e-4\"), got {}", where,
			     sym.name, raw);
		val = s;
		break;
	}
	case SymbolType::String:
		if (!raw.empty() && raw.front() == '"') {
			if (!unquote(raw, val))
				fail("{}: CONFIG_{} has a malformed quoted value {}", where, sym.name, raw);
		} else if (o == Origin::File) {
			fail("{}: CONFIG_{} is a string and must be quoted, got {}", where, sym.name, raw);
		} else {
			val = raw;
		}
		break;
	}
	// Selecting a choice member deselects the others of its group.
	// (A file lists every member itself; finish() checks that exactly one is selected.)
	if (o == Origin::Override && sym.type == SymbolType::Bool && *sym.choice && val == "y") {
		for (const auto &other : k_symbols)
			if (std::string(other.choice) == sym.choice && other.name != std::string(sym.name)) {
				values_[other.name] = "n";
				origins_[other.name] = o;
			}
	}
	values_[sym.name] = val;
	origins_[sym.name] = o;
}

void Config::finish(const std::string &where)
{
	// Each choice group needs exactly one selected member.
	std::map<std::string, std::vector<std::string>> groups;
	for (const auto &s : k_symbols)
		if (*s.choice && values_[s.name] == "y")
			groups[s.choice].push_back(s.name);
	std::set<std::string> seen;
	for (const auto &s : k_symbols) {
		if (!*s.choice || seen.count(s.choice))
			continue;
		seen.insert(s.choice);
		auto &sel = groups[s.choice];
		if (sel.size() > 1)
			fail("{}: CONFIG_{} and CONFIG_{} are both set but belong to one choice", where, sel[0],
			     sel[1]);
		if (sel.empty()) {
			// Nothing selected (all "is not set"): fall back to the choice's default member.
			for (const auto &m : k_symbols)
				if (std::string(m.choice) == s.choice && std::string(m.def) == "y")
					values_[m.name] = "y";
		}
	}
}

Config Config::parse(const std::string &text, const std::string &origin)
{
	Config c;
	// Choice members read from a file start unselected so that the file decides.
	for (const auto &s : k_symbols)
		if (*s.choice)
			c.values_[s.name] = "n";
	c.source_ = origin;
	std::istringstream in(text);
	std::string line;
	int lineno = 0;
	std::set<std::string> chosen_in_file;
	while (std::getline(in, line)) {
		lineno++;
		if (!line.empty() && line.back() == '\r')
			line.pop_back();
		std::string where = fmt::format("{}:{}", origin, lineno);
		size_t b = line.find_first_not_of(" \t");
		if (b == std::string::npos)
			continue;
		line = line.substr(b);
		while (!line.empty() && (line.back() == ' ' || line.back() == '\t'))
			line.pop_back();
		if (line[0] == '#') {
			const std::string pre = "# CONFIG_", post = " is not set";
			if (line.rfind(pre, 0) == 0 && line.size() > pre.size() + post.size() &&
			    line.compare(line.size() - post.size(), post.size(), post) == 0) {
				std::string name = line.substr(pre.size(), line.size() - pre.size() - post.size());
				const SymbolInfo *sym = find_symbol(name);
				if (!sym)
					fail("{}: unknown symbol CONFIG_{}", where, name);
				if (sym->type != SymbolType::Bool)
					fail("{}: CONFIG_{} is a {} and cannot be 'not set'", where, name,
					     type_name(sym->type));
				c.assign(*sym, "n", where, Origin::File);
			}
			continue;
		}
		if (line.rfind("CONFIG_", 0) != 0 || line.find('=') == std::string::npos)
			fail("{}: malformed line (expected CONFIG_NAME=value or a # comment): {}", where,
			     line.substr(0, 60));
		size_t eq = line.find('=');
		std::string name = line.substr(7, eq - 7);
		if (name.empty())
			fail("{}: malformed line (empty symbol name)", where);
		const SymbolInfo *sym = find_symbol(name);
		if (!sym)
			fail("{}: unknown symbol CONFIG_{}", where, name);
		c.assign(*sym, line.substr(eq + 1), where, Origin::File);
	}
	c.finish(origin);
	return c;
}

Config Config::load(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	if (!f)
		fail("{}: cannot read configuration ({}); create one with `make defconfig-<preset>` "
		     "(list them with `make list-defconfigs`)",
		     path, std::strerror(errno));
	std::stringstream ss;
	ss << f.rdbuf();
	return parse(ss.str(), path);
}

void Config::set(const std::string &assignment, const std::string &origin)
{
	size_t eq = assignment.find('=');
	if (eq == std::string::npos || eq == 0)
		fail("{}: '{}' is not SYMBOL=VALUE", origin, assignment);
	std::string name = assignment.substr(0, eq);
	if (name.rfind("CONFIG_", 0) == 0)
		name = name.substr(7);
	const SymbolInfo *sym = find_symbol(name);
	if (!sym)
		fail("{}: unknown symbol CONFIG_{}", origin, name);
	std::string val = assignment.substr(eq + 1);
	if (sym->type == SymbolType::Bool && *sym->choice && val == "n")
		fail("{}: CONFIG_{} belongs to a choice; select another member with =y instead", origin,
		     name);
	assign(*sym, val, origin, Origin::Override);
}

const SymbolInfo &Config::lookup(const std::string &name, SymbolType want) const
{
	const SymbolInfo *s = find_symbol(name);
	if (!s)
		fail("internal: unknown symbol CONFIG_{} requested", name);
	if (s->type != want)
		fail("internal: CONFIG_{} is a {}, requested as {}", name, type_name(s->type),
		     type_name(want));
	return *s;
}

bool Config::get_bool(const std::string &name) const
{
	lookup(name, SymbolType::Bool);
	return values_.at(name) == "y";
}

long long Config::get_int(const std::string &name) const
{
	lookup(name, SymbolType::Int);
	long long v = 0;
	parse_ll(values_.at(name), v);
	return v;
}

double Config::get_float(const std::string &name) const
{
	lookup(name, SymbolType::Float);
	double d = 0;
	parse_double(values_.at(name), d);
	return d;
}

std::string Config::get_string(const std::string &name) const
{
	lookup(name, SymbolType::String);
	return values_.at(name);
}

std::string Config::choice(const std::string &member) const
{
	const SymbolInfo *s = find_symbol(member);
	if (!s || !*s->choice)
		fail("internal: CONFIG_{} is not a choice member", member);
	for (const auto &m : k_symbols)
		if (std::string(m.choice) == s->choice && values_.at(m.name) == "y")
			return m.name;
	return member;
}

std::string Config::to_text(bool annotate) const
{
	std::string out;
	for (const auto &s : k_symbols) {
		const std::string &v = values_.at(s.name);
		if (annotate && origins_.at(s.name) != Origin::File)
			out += origins_.at(s.name) == Origin::Override ? "# (--set) " : "# (default) ";
		switch (s.type) {
		case SymbolType::Bool:
			out += v == "y" ? fmt::format("CONFIG_{}=y\n", s.name)
					: fmt::format("# CONFIG_{} is not set\n", s.name);
			break;
		case SymbolType::Int:
			out += fmt::format("CONFIG_{}={}\n", s.name, v);
			break;
		case SymbolType::Float:
		case SymbolType::String:
			out += fmt::format("CONFIG_{}={}\n", s.name, config_quote(v));
			break;
		}
	}
	return out;
}

std::vector<std::string> Config::diff(const Config &other, const std::vector<std::string> &ignore) const
{
	std::vector<std::string> out;
	for (const auto &s : k_symbols) {
		bool skip = false;
		for (const auto &i : ignore)
			skip |= i == s.name;
		if (!skip && values_.at(s.name) != other.values_.at(s.name))
			out.push_back(fmt::format("CONFIG_{} ({} -> {})", s.name, values_.at(s.name),
						  other.values_.at(s.name)));
	}
	return out;
}

Config::Origin Config::origin(const std::string &name) const { return origins_.at(name); }

} // namespace knlp
