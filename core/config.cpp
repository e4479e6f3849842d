#include "core/config.h"

#include <cctype>
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

const std::vector<SymbolInfo> &symbol_table()
{
	return k_symbols;
}

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
	settings_ = make_settings(*this, "(defaults)");
}

// Conditions of `default X if COND` and `prompt if COND`: Kconfig's syntax over bool
// symbols, as the generator writes them (it refuses anything else at build time).
namespace {

struct CondParser {
	const std::string &s;
	const std::map<std::string, std::string> &values;
	size_t i = 0;

	void space()
	{
		while (i < s.size() && s[i] == ' ')
			i++;
	}
	bool eat(const char *tok)
	{
		space();
		size_t n = std::strlen(tok);
		if (s.compare(i, n, tok) != 0)
			return false;
		i += n;
		return true;
	}
	bool primary()
	{
		if (eat("!"))
			return !primary();
		if (eat("(")) {
			bool v = any();
			if (!eat(")"))
				fail("internal: unbalanced condition '{}'", s);
			return v;
		}
		space();
		size_t b = i;
		while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_'))
			i++;
		auto it = values.find(s.substr(b, i - b));
		if (b == i || it == values.end())
			fail("internal: bad condition '{}'", s);
		return it->second == "y";
	}
	bool all()
	{
		bool v = primary();
		while (eat("&&"))
			v = primary() && v;
		return v;
	}
	bool any()
	{
		bool v = all();
		while (eat("||"))
			v = all() || v;
		return v;
	}
};

} // namespace

bool Config::holds(const std::string &cond) const
{
	if (cond.empty())
		return true;
	CondParser p{cond, values_};
	return p.any();
}

std::string Config::default_of(const SymbolInfo &s, bool *conditional) const
{
	for (const auto &r : s.defaults)
		if (holds(r.cond)) {
			if (conditional)
				*conditional = *r.cond != '\0';
			return r.value;
		}
	if (conditional)
		*conditional = false;
	// No default holds: a bool is n (as in Kconfig); other types keep the visible default.
	return s.type == SymbolType::Bool && !s.defaults.empty() ? "n" : s.def;
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

void Config::resolve_hidden(const std::string &where, bool strict_file, const std::set<std::string> &assigned)
{
	for (const auto &s : k_symbols) {
		if (!*s.only_if || holds(s.only_if))
			continue;
		const std::string want = default_of(s);
		std::string &have = values_[s.name];
		const Origin o = origins_[s.name];
		const bool now = assigned.count(s.name) > 0;
		if (have != want && (now || (o == Origin::File && strict_file))) {
			const bool plain = find_symbol(s.only_if) != nullptr;
			fail("{}: CONFIG_{}={} cannot be set: it applies only with {} (the current choice makes it {})",
			     where, s.name, have,
			     plain ? fmt::format("CONFIG_{}=y", s.only_if) : fmt::format("'{}'", s.only_if), want);
		}
		have = want;
		origins_[s.name] = Origin::Derived;
	}
}

void Config::finish(const std::string &where, Mode mode)
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
	// Symbols the file does not mention take the defaults the file's other values give (a
	// file selecting GPT2_SIZE_124M alone gets its context length of 1024), in Kconfig order.
	for (const auto &s : k_symbols) {
		if (*s.choice || origins_[s.name] != Origin::Default)
			continue;
		bool conditional = false;
		values_[s.name] = default_of(s, &conditional);
		if (conditional)
			origins_[s.name] = Origin::Derived;
	}
	if (mode == Mode::Saved) {
		// Written before GPT2_SIZE_CUSTOM existed, a saved shape that differs from its size
		// choice was a custom one: select the member that makes it settable.
		for (const auto &s : k_symbols) {
			const SymbolInfo *gate = *s.only_if ? find_symbol(s.only_if) : nullptr;
			if (gate && *gate->choice && !holds(s.only_if) && values_[s.name] != default_of(s)) {
				for (const auto &m : k_symbols)
					if (std::string(m.choice) == gate->choice)
						values_[m.name] = m.name == std::string(gate->name) ? "y" : "n";
			}
		}
	}
	resolve_hidden(where, true, {});
	settings_ = make_settings(*this, where);
}

Config Config::parse(const std::string &text, const std::string &origin, Mode mode)
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
	c.finish(origin, mode);
	return c;
}

Config Config::load(const std::string &path, Mode mode)
{
	std::ifstream f(path, std::ios::binary);
	if (!f)
		fail("{}: cannot read configuration ({}); create one with `make defconfig-<preset>` "
		     "(list them with `make list-defconfigs`)",
		     path, std::strerror(errno));
	std::stringstream ss;
	ss << f.rdbuf();
	return parse(ss.str(), path, mode);
}

void Config::set(const std::string &assignment, const std::string &origin)
{
	set_all({assignment}, origin);
}

void Config::set_all(const std::vector<std::string> &assignments, const std::string &origin)
{
	// Values that only followed a default (the file wrote what the defaults gave, or never
	// mentioned the symbol) follow it to the new choice: `--set GPT2_SIZE_124M=y` on the
	// quickstart's .config gets 124M's context length, a value chosen on purpose stays.
	std::map<std::string, std::string> followed;
	std::set<std::string> assigned;
	for (const auto &s : k_symbols)
		if (!*s.choice && origins_[s.name] != Origin::Override && values_[s.name] == default_of(s))
			followed[s.name] = values_[s.name];
	for (const auto &a : assignments) {
		size_t eq = a.find('=');
		if (eq == std::string::npos || eq == 0)
			fail("{}: '{}' is not SYMBOL=VALUE", origin, a);
		std::string name = a.substr(0, eq);
		if (name.rfind("CONFIG_", 0) == 0)
			name = name.substr(7);
		const SymbolInfo *sym = find_symbol(name);
		if (!sym)
			fail("{}: unknown symbol CONFIG_{}", origin, name);
		std::string val = a.substr(eq + 1);
		if (sym->type == SymbolType::Bool && *sym->choice && val == "n")
			fail("{}: CONFIG_{} belongs to a choice; select another member with =y instead", origin, name);
		assign(*sym, val, origin, Origin::Override);
		assigned.insert(sym->name);
	}
	// An override of a symbol whose menu is off does nothing: say so (a matrix may set
	// symbols some of its runs ignore, so this warns instead of failing).
	for (const auto &name : assigned) {
		const SymbolInfo *sym = find_symbol(name);
		if (*sym->depends && !holds(sym->depends) && origin == "--set")
			fmt::print(stderr, "knlp: warning: --set CONFIG_{} has no effect: it applies only with {}\n",
				   name,
				   find_symbol(sym->depends) ? fmt::format("CONFIG_{}=y", sym->depends)
							     : fmt::format("'{}'", sym->depends));
	}
	for (const auto &s : k_symbols) {
		auto it = followed.find(s.name);
		if (it == followed.end() || origins_[s.name] == Origin::Override)
			continue;
		bool conditional = false;
		std::string now = default_of(s, &conditional);
		if (now != it->second) {
			values_[s.name] = now;
			origins_[s.name] = conditional ? Origin::Derived : Origin::Default;
		}
	}
	resolve_hidden(origin, false, assigned);
	settings_ = make_settings(*this, origin);
}

const SymbolInfo &Config::lookup(const std::string &name, SymbolType want) const
{
	const SymbolInfo *s = find_symbol(name);
	if (!s)
		fail("internal: unknown symbol CONFIG_{} requested", name);
	if (s->type != want)
		fail("internal: CONFIG_{} is a {}, requested as {}", name, type_name(s->type), type_name(want));
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

std::string Config::selected(const std::string &choice_name) const
{
	for (const auto &m : k_symbols)
		if (choice_name == m.choice && values_.at(m.name) == "y")
			return m.name;
	fail("internal: no member of choice {} is selected", choice_name);
}

std::string Config::to_text(bool annotate) const
{
	std::string out;
	for (const auto &s : k_symbols) {
		const std::string &v = values_.at(s.name);
		if (annotate && origins_.at(s.name) != Origin::File) {
			const Origin o = origins_.at(s.name);
			out += o == Origin::Override  ? "# (--set) "
			       : o == Origin::Derived ? "# (derived) "
						      : "# (default) ";
		}
		switch (s.type) {
		case SymbolType::Bool:
			out += v == "y" ? fmt::format("CONFIG_{}=y\n", s.name)
					: fmt::format("# CONFIG_{} is not set\n", s.name);
			break;
		case SymbolType::Int: out += fmt::format("CONFIG_{}={}\n", s.name, v); break;
		case SymbolType::Float:
		case SymbolType::String: out += fmt::format("CONFIG_{}={}\n", s.name, config_quote(v)); break;
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

Config::Origin Config::origin(const std::string &name) const
{
	return origins_.at(name);
}

} // namespace knlp
