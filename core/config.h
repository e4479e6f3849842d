// Run-time configuration: a Linux-format .config validated against the symbol table that
// the build generates from the Kconfig tree (scripts/kconfig.py gensyms), resolved the way
// Kconfig resolves it, and read by the rest of the code as typed settings (core/settings.h).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/settings.h"

namespace knlp {

enum class SymbolType { Bool, Int, Float, String };

// `default VALUE if COND` of a Kconfig entry; cond "" always holds. Conditions are written
// in Kconfig's own syntax over bool symbols (!, &&, ||, parentheses).
struct DefaultRule {
	const char *value;
	const char *cond;
};

struct SymbolInfo {
	const char *name; // without the CONFIG_ prefix
	SymbolType type;
	const char *def;  // default under an all-defaults configuration
	long long lo, hi; // inclusive range when has_range
	bool has_range;
	const char *choice; // name of the choice group, "" when none
	const char *prompt;
	// The entry's own prompt condition (`int "..." if GPT2_SIZE_CUSTOM`): outside it the
	// symbol cannot be set and takes the value its defaults give. "" when always settable.
	const char *only_if;
	std::vector<DefaultRule> defaults; // in Kconfig order; the first that holds applies
	// Its menus' and ifs' dependencies (`if MODEL_GPT2`): outside them it does nothing.
	const char *depends;
};

const std::vector<SymbolInfo> &symbol_table();
const SymbolInfo *find_symbol(const std::string &name);
const char *type_name(SymbolType t);

class Config {
public:
	// Default: the value Kconfig's defaults give. Derived: a default whose condition
	// depends on other symbols (the size choice decides GPT2_N_LAYER).
	enum class Origin { Default, Derived, File, Override };
	// Strict: a configuration a person wrote (every inconsistency is an error). Saved: one
	// knlp wrote earlier (a run folder's config, a checkpoint's state.json), read as the
	// version that wrote it meant it.
	enum class Mode { Strict, Saved };

	// Start from the table's defaults.
	Config();
	// Read a .config; errors name the file and line.
	static Config load(const std::string &path, Mode mode = Mode::Strict);
	// Parse the text of a .config (origin names the source in errors).
	static Config parse(const std::string &text, const std::string &origin, Mode mode = Mode::Strict);

	// Apply NAME=VALUE (NAME with or without CONFIG_; strings quoted or not).
	void set(const std::string &assignment, const std::string &origin = "--set");
	// Apply several at once: conditions are judged after all of them, so their order does
	// not matter (`--set GPT2_N_LAYER=6 --set GPT2_SIZE_CUSTOM=y` works).
	void set_all(const std::vector<std::string> &assignments, const std::string &origin = "--set");

	// The typed view of the configuration; code outside the config layer reads only this.
	const Settings &settings() const { return settings_; }

	// String-keyed access, for the config layer itself, the matrix runner's generic symbol
	// handling and tests of the config layer.
	bool get_bool(const std::string &name) const;
	long long get_int(const std::string &name) const;
	double get_float(const std::string &name) const;
	std::string get_string(const std::string &name) const;
	// Name of the selected member of a choice group (by the choice's name, e.g. "GPT2_SIZE").
	std::string selected(const std::string &choice_name) const;
	// Raw text of a symbol's value as .config spells it (without quotes).
	const std::string &raw(const std::string &name) const { return values_.at(name); }

	// Full configuration in .config format (every symbol), stable order. With annotate,
	// values not taken from the file are marked (display only: not parseable).
	std::string to_text(bool annotate = false) const;
	// Symbols whose values differ between two configurations.
	std::vector<std::string> diff(const Config &other, const std::vector<std::string> &ignore = {}) const;
	Origin origin(const std::string &name) const;
	const std::string &source() const { return source_; }

private:
	void assign(const SymbolInfo &sym, const std::string &raw, const std::string &where, Origin o);
	void finish(const std::string &where, Mode mode);
	const SymbolInfo &lookup(const std::string &name, SymbolType want) const;
	bool holds(const std::string &cond) const;
	// The value a symbol's defaults give under the current values (and whether a
	// conditional rule gave it).
	std::string default_of(const SymbolInfo &s, bool *conditional = nullptr) const;
	// Symbols outside their `only_if` take their defaults. A differing value is an error
	// when it was just assigned (`assigned`), or read from the file when `strict_file`.
	void resolve_hidden(const std::string &where, bool strict_file, const std::set<std::string> &assigned);

	std::map<std::string, std::string> values_;
	std::map<std::string, Origin> origins_;
	std::string source_ = "(defaults)";
	Settings settings_;
};

// Quote a string value the way .config files do.
std::string config_quote(const std::string &s);

} // namespace knlp
