// Run-time configuration: a Linux-format .config validated against the symbol table that
// the build generates from the Kconfig tree (scripts/kconfig.py gensyms).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace knlp {

enum class SymbolType { Bool, Int, Float, String };

struct SymbolInfo {
	const char *name;     // without the CONFIG_ prefix
	SymbolType type;
	const char *def;      // default under an all-defaults configuration
	long long lo, hi;     // inclusive range when has_range
	bool has_range;
	const char *choice;   // name of the choice group, "" when none
	const char *prompt;
};

const std::vector<SymbolInfo> &symbol_table();
const SymbolInfo *find_symbol(const std::string &name);
const char *type_name(SymbolType t);

class Config {
public:
	enum class Origin { Default, File, Override };

	// Start from the table's defaults.
	Config();
	// Read a .config; errors name the file and line.
	static Config load(const std::string &path);
	// Parse the text of a .config (origin names the source in errors).
	static Config parse(const std::string &text, const std::string &origin);

	// Apply NAME=VALUE (NAME with or without CONFIG_; strings quoted or not).
	void set(const std::string &assignment, const std::string &origin = "--set");

	bool get_bool(const std::string &name) const;
	long long get_int(const std::string &name) const;
	double get_float(const std::string &name) const;
	std::string get_string(const std::string &name) const;
	// Name of the selected member of the choice group that `member` belongs to.
	std::string choice(const std::string &member) const;

	// Full configuration in .config format (every symbol), stable order. With annotate,
	// values not taken from the file are marked (display only: not parseable).
	std::string to_text(bool annotate = false) const;
	// Symbols whose values differ between two configurations.
	std::vector<std::string> diff(const Config &other, const std::vector<std::string> &ignore = {}) const;
	Origin origin(const std::string &name) const;
	const std::string &source() const { return source_; }

private:
	void assign(const SymbolInfo &sym, const std::string &raw, const std::string &where, Origin o);
	void finish(const std::string &where);
	const SymbolInfo &lookup(const std::string &name, SymbolType want) const;

	std::map<std::string, std::string> values_;
	std::map<std::string, Origin> origins_;
	std::string source_ = "(defaults)";
};

// Quote a string value the way .config files do.
std::string config_quote(const std::string &s);

} // namespace knlp
