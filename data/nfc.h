// Unicode canonical composition (NFC), the normalizer of Qwen2's and other tokenizer.json
// files. Invalid UTF-8 bytes pass through unchanged and block composition across them.
#pragma once
#include <string>
#include <string_view>

namespace knlp {

// True when `text` is certainly unchanged by NFC (every code point is a starter without a
// decomposition that nothing composes with): the fast path, taken for ASCII text.
bool nfc_quick_check(std::string_view text);
// NFC of `text` into `out` (replacing its content).
void nfc_normalize(std::string_view text, std::string &out);

} // namespace knlp
