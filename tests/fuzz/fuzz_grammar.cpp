// fuzz_grammar: grammars as API users send them (guided_grammar, ebnf, structured_outputs
// grammar), and texts fed to the recognizer they compile to.
//   The input is a grammar's bytes, a NUL byte, then the bytes of a text. compile() either throws
//   dpa::Error or gives a grammar; the text's first 256 bytes are fed while they are taken. Then:
//   - a refused byte leaves the state as it was, and feeding the taken bytes at once takes them all
//     and ends in the same state (by key) and completeness;
//   - no dead end: a state reached without a limit dropping parses is complete or takes some byte;
//   - a complete text is valid UTF-8 (RFC 3629);
//   - the token mask of a few states over a small vocabulary (single bytes and pieces of the text)
//     is what feeding each token alone gives, unless the walk met its work cap.
//   compile()'s own bounds (time, memory) are held by libFuzzer's -timeout and -rss_limit_mb.
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "engine/grammar.h"
#include "engine/structured_output.h"
#include "fuzz_common.h"

namespace {
using namespace dpa;

// Some byte takes the state further (or it is complete).
bool live(const engine::GrammarPrefix& p) {
  if (p.complete()) return true;
  for (int b = 0; b < 256; ++b) {
    engine::GrammarPrefix q = p;
    if (q.feed(static_cast<uint8_t>(b))) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > engine::Grammar::kMaxText + 1024) return 0;
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const std::string_view text_g(reinterpret_cast<const char*>(data), nul ? static_cast<size_t>(nul - data) : size);
  std::string_view text = nul ? std::string_view(reinterpret_cast<const char*>(nul + 1), size - text_g.size() - 1)
                              : std::string_view();
  text = text.substr(0, 256);
  std::shared_ptr<const engine::Grammar> g;
  try {
    g = engine::Grammar::compile(text_g);
  } catch (const Error&) {
    return 0;  // the documented outcome for a grammar it refuses
  }
  {
    engine::GrammarPrefix start(*g);  // an arena of its own: its probes' limits are not the text's
    if (!live(start) && !start.met_limit()) __builtin_trap();  // every rule reachable from root can end
  }
  engine::GrammarPrefix p(*g);
  const engine::GrammarPrefix fresh = p;
  std::size_t taken = 0;
  std::vector<engine::GrammarPrefix> states{p};
  while (taken < text.size()) {
    const engine::GrammarPrefix before = p;
    if (!p.feed(static_cast<uint8_t>(text[taken]))) {
      if (!p.same_as(before) || p.complete() != before.complete()) __builtin_trap();
      break;
    }
    ++taken;
    if (taken % 16 == 0) states.push_back(p);
  }
  engine::GrammarPrefix at_once = fresh;
  if (!at_once.feed(text.substr(0, taken)) || at_once.key() != p.key() || at_once.complete() != p.complete())
    __builtin_trap();
  if (p.complete() && !fuzz::valid_utf8(text.substr(0, taken))) __builtin_trap();
  // A dead end only where a limit dropped parses (on the way, or in the probing bytes' steps).
  if (!live(p) && !p.met_limit()) __builtin_trap();
  // Masks over a small vocabulary: every byte, and pieces of the text (some cut characters).
  std::set<std::string> words;
  for (int b = 0; b < 256; ++b) words.insert(std::string(1, static_cast<char>(b)));
  for (std::size_t a = 0; a + 1 < text.size() && words.size() < 400; a += 3)
    words.insert(std::string(text.substr(a, 2 + a % 5)));
  const std::vector<std::string> vocab(words.begin(), words.end());
  const engine::TokenTrie trie(vocab);
  std::vector<uint32_t> mask;
  states.push_back(p);
  for (const auto& s : states) {
    if (trie.allowed(s, mask).over_budget) continue;
    for (std::size_t id = 0; id < vocab.size(); ++id) {
      engine::GrammarPrefix q = s;
      if (engine::mask_allows(mask, id) != q.feed(vocab[id])) __builtin_trap();
    }
  }
  return 0;
}
