// fuzz_json_schema: JSON schemas as API users send them (response_format json_schema,
// guided_json), and texts fed to the recognizer they compile to.
//   The input is a schema's text, a NUL byte, then the bytes of a text. compile() either throws
//   dpa::Error or gives a schema; the text's bytes are fed while they are taken. Then:
//   - no dead end: a state that is not complete takes some byte;
//   - a complete text is JSON (Boost.JSON parses it, exponents past a double's range aside);
//   - feeding the taken bytes at once takes them all, and a run with a refused byte leaves the
//     state as it was (it takes the same next byte as before).
#include <boost/json.hpp>

#include <cstring>
#include <string_view>

#include "core/error.h"
#include "engine/json_schema.h"

namespace {
using namespace dpa;

bool takes_some_byte(const engine::SchemaPrefix& p) {
  for (int b = 0; b < 256; ++b) {
    engine::SchemaPrefix q = p;
    if (q.feed(static_cast<uint8_t>(b))) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 16)) return 0;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const std::string_view schema_text(reinterpret_cast<const char*>(data), nul ? static_cast<size_t>(nul - data) : size);
  const std::string_view text = nul ? std::string_view(reinterpret_cast<const char*>(nul + 1), size - schema_text.size() - 1)
                                    : std::string_view();
  std::shared_ptr<const engine::JsonSchema> schema;
  try {
    schema = engine::JsonSchema::compile(schema_text);
  } catch (const Error&) {
    return 0;  // the documented outcome for a schema it cannot follow
  }
  engine::SchemaPrefix p(*schema);
  if (!p.complete() && !takes_some_byte(p)) __builtin_trap();
  std::size_t taken = 0;
  while (taken < text.size() && p.feed(static_cast<uint8_t>(text[taken]))) {
    ++taken;
    if (!p.complete() && !takes_some_byte(p)) __builtin_trap();
  }
  const engine::SchemaPrefix fresh(*schema);
  engine::SchemaPrefix at_once = fresh;
  if (!at_once.feed(text.substr(0, taken)) || at_once.complete() != p.complete()) __builtin_trap();
  if (taken < text.size()) {  // the refused byte fails the whole run, which leaves the state as it was
    engine::SchemaPrefix run = fresh;
    if (run.feed(text.substr(0, taken + 1))) __builtin_trap();
    for (int b = 0; b < 256; ++b) {
      engine::SchemaPrefix x = fresh, y = run;
      if (x.feed(static_cast<uint8_t>(b)) != y.feed(static_cast<uint8_t>(b))) __builtin_trap();
    }
  }
  if (taken == text.size() && p.complete()) {
    boost::system::error_code ec;
    boost::json::parse_options opt;
    opt.max_depth = engine::SchemaPrefix::kMaxDepth + 1;
    (void)boost::json::parse(text, ec, {}, opt);
    if (ec && ec != boost::json::error::exponent_overflow) __builtin_trap();
  }
  return 0;
}
