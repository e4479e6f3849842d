// The typed configuration. scripts/kconfig.py generates, from the Kconfig tree, one struct
// per subsystem (core, data, model, gpt2, attention, image, optim, prune, train, ddp, fim,
// quant, tier, gnn, matrix, tracking, debug) and one enum per choice (settings_gen.h). A
// Config fills a Settings once, when it is read or changed; code reads fields, so a renamed
// or misspelled symbol is a compile error rather than a failure on the one path that reads it.
#pragma once
#include <string>

#include "settings_gen.h"

namespace knlp {

class Config;

// Fill every field from a resolved configuration and check the value ranges Kconfig cannot
// express (floats); errors name `where` and the symbol.
Settings make_settings(const Config &cfg, const std::string &where);

// "SYMBOL=y" selecting a choice member, for Config::set.
template <class E> std::string select(E member)
{
	return std::string(symbol_of(member)) + "=y";
}

} // namespace knlp
