// fuzz_regex: regex patterns as API users send them (guided_regex, a regex response format), and
// texts fed to the recognizer they compile to.
//   The input is a pattern's bytes, a NUL byte, then the bytes of a text. compile() either throws
//   dpa::Error or gives a regex; the text's bytes are fed while they are taken. Then:
//   - no dead end: every state reached is accepting or takes some byte, and (for DFAs of up to
//     4096 states) every state has a way to an accepting one;
//   - feeding the taken bytes at once takes them all and ends in the same state, and a run with a
//     refused byte leaves the state as it was;
//   - a complete text is valid UTF-8 (RFC 3629);
//   - compiled for JSON string bodies (Regex::Target::json_string) too: no dead end, and a body
//     it takes whole is a JSON string whose value the plain form takes whole.
//   compile()'s own bounds (time, memory) are held by libFuzzer's -timeout and -rss_limit_mb.
#include <boost/json.hpp>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "engine/regex.h"
#include "fuzz_common.h"

namespace {
using namespace dpa;

// Accepting or taking some byte (and every target a state of the DFA).
bool live(const engine::Regex& re, int32_t state) {
  if (state < 0 || state >= re.states()) return false;
  bool any = re.accepting(state);
  for (int b = 0; b < 256; ++b) {
    const int32_t t = re.next(state, static_cast<uint8_t>(b));
    if (t >= re.states()) return false;
    any = any || t >= 0;
  }
  return any;
}

// Every state reaches an accepting one (no cycle without a way out): a reverse search from the
// accepting states over the whole table, for the smaller DFAs.
bool all_reach_a_match(const engine::Regex& re) {
  const auto n = static_cast<std::size_t>(re.states());
  std::vector<std::vector<int32_t>> from(n);
  std::vector<char> good(n, 0);
  std::vector<int32_t> queue;
  for (std::size_t s = 0; s < n; ++s) {
    if (re.accepting(static_cast<int32_t>(s))) good[s] = 1, queue.push_back(static_cast<int32_t>(s));
    for (int b = 0; b < 256; ++b)
      if (const int32_t t = re.next(static_cast<int32_t>(s), static_cast<uint8_t>(b)); t >= 0)
        from[static_cast<std::size_t>(t)].push_back(static_cast<int32_t>(s));
  }
  for (std::size_t q = 0; q < queue.size(); ++q)
    for (const int32_t s : from[static_cast<std::size_t>(queue[q])])
      if (!good[static_cast<std::size_t>(s)]) good[static_cast<std::size_t>(s)] = 1, queue.push_back(s);
  return queue.size() == n;
}


}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 2 * engine::Regex::kMaxPattern) return 0;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const std::string_view pattern(reinterpret_cast<const char*>(data),
                                 nul ? static_cast<size_t>(nul - data) : size);
  const std::string_view text =
      nul ? std::string_view(reinterpret_cast<const char*>(nul + 1), size - pattern.size() - 1)
          : std::string_view();
  std::shared_ptr<const engine::Regex> re;
  try {
    re = engine::Regex::compile(pattern);
  } catch (const Error&) {
    return 0;  // the documented outcome for a pattern it refuses
  }
  if (re->states() <= 4096 && !all_reach_a_match(*re)) __builtin_trap();
  engine::RegexPrefix p(*re);
  if (!live(*re, p.state())) __builtin_trap();
  std::size_t taken = 0;
  while (taken < text.size() && p.feed(static_cast<uint8_t>(text[taken]))) {
    ++taken;
    if (!live(*re, p.state())) __builtin_trap();
  }
  const engine::RegexPrefix fresh(*re);
  engine::RegexPrefix at_once = fresh;
  if (!at_once.feed(text.substr(0, taken)) || at_once.state() != p.state() ||
      at_once.complete() != p.complete())
    __builtin_trap();
  if (taken < text.size()) {  // the refused byte fails the whole run, which leaves the state as it was
    engine::RegexPrefix run = fresh;
    if (run.feed(text.substr(0, taken + 1)) || run.state() != fresh.state()) __builtin_trap();
    engine::RegexPrefix q = p;
    if (q.feed(static_cast<uint8_t>(text[taken])) || q.state() != p.state()) __builtin_trap();
  }
  if (p.complete() && !fuzz::valid_utf8(text.substr(0, taken))) __builtin_trap();
  // The same pattern over JSON string bodies (JSON Schema's pattern): no dead end either, and a
  // body it takes whole parses as a JSON string whose value the plain DFA takes whole.
  std::shared_ptr<const engine::Regex> js;
  try {
    js = engine::Regex::compile(pattern, engine::Regex::Target::json_string);
  } catch (const Error&) {
    return 0;  // more states than the plain form may pass a cap
  }
  if (js->states() <= 4096 && !all_reach_a_match(*js)) __builtin_trap();
  engine::RegexPrefix q(*js);
  std::size_t body = 0;
  while (body < text.size() && q.feed(static_cast<uint8_t>(text[body]))) {
    ++body;
    if (!live(*js, q.state())) __builtin_trap();
  }
  if (q.complete()) {
    boost::system::error_code ec;
    const boost::json::value v = boost::json::parse("\"" + std::string(text.substr(0, body)) + "\"", ec);
    if (ec || !v.is_string()) __builtin_trap();
    engine::RegexPrefix plain(*re);
    if (!plain.feed(std::string_view(v.get_string())) || !plain.complete()) __builtin_trap();
  }
  return 0;
}
