// Structured output to a regular expression (vLLM's guided_regex, SGLang's regex): the pattern
// compiled once into a DFA over bytes, and a byte-level recognizer of the texts that fully match
// it, for TokenTrie's mask walk (structured_output.h).
//
// Semantics: the whole output must match, as Python's re.fullmatch(pattern, output); the output
// is UTF-8 and the pattern works on code points (so `.` takes "é" whole, as two bytes). The DFA
// takes only valid UTF-8 (RFC 3629: no overlong forms, surrogates or code points past U+10FFFF).
//
// Syntax: Python's re for str patterns, less what a DFA cannot do. Supported: literals (any code
// point); `.` (any code point but \n: no DOTALL); [...] and [^...] with ranges and escapes
// (Python's rules: `]` first is literal, `-` first or last is literal); \d \w \s \D \W \S; the
// escapes \n \t \r \f \v \a \0 and octal \ooo, \xHH, \uHHHH, \UHHHHHHHH, \b (backspace, in a class
// only), escaped punctuation; (...), (?:...), (?P<name>...), (?<name>...), (?#comment); `|` with
// empty alternatives; * + ? {n} {n,} {n,m} {,m} {,}, each optionally lazy (`?` after it: the same
// set of texts); a `{` that does not begin a valid quantifier is a literal, as in Python.
// ^ and \A only where nothing can come before them (the pattern's start, a top-level
// alternative's, a group's at such a place, outside any repeat), $ \Z \z only where nothing can
// come after; there they are no-ops. (Python's $ also matches before a final \n; no full match
// can use that once $ must end the pattern, but a pattern such as `a$\n` is therefore refused.)
//
// Differences from Python a user may meet:
//   - \d \w \s are ASCII: [0-9], [A-Za-z0-9_], [ \t\n\r\f\v] (Python's default for str patterns
//     is Unicode: any decimal digit, letters and digits of every script, Unicode spaces);
//     \D \W \S are their complements over all code points (so \W takes "é").
//   - Inline flags: (?i) (?s) (?m) (?a) (?u) at the pattern's start, (?i-s:...) scoped. i folds
//     ASCII letters as Python does (either case, plus İ ı for i, the Kelvin sign for k, ſ for s);
//     a non-ASCII code point written under it is refused (its case partners would need Unicode's
//     tables). s lets '.' take '\n'; m, a and u change nothing here. (?x) and (?L) are refused.
//   - Refused at compile(), with the construct and its byte offset: backreferences (\1,
//     (?P=name), \g<...>), lookahead and lookbehind, \b \B word boundaries, the flags above,
//     atomic groups and possessive quantifiers, conditionals, \N{...}, surrogate or
//     out-of-range code points in escapes, repeat counts past kMaxRepeat, groups nested more than
//     kMaxDepth deep, patterns longer than kMaxPattern or that match no text at all, and patterns
//     whose automaton would pass the caps below ("the pattern is too complex").
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "engine/mask_memo.h"
#include "engine/recognizer_util.h"

namespace dpa::engine {

class RegexPrefix;
namespace regex_detail {
struct Tables;  // regex_internal.h
}

// A compiled pattern: a DFA over bytes whose every state is live (some text from it reaches a
// full match). Immutable; shared by many requests and read from several threads at once.
class Regex {
 public:
  static constexpr std::size_t kMaxPattern = 16 * 1024;  // bytes of pattern
  static constexpr int64_t kMaxRepeat = 1000;            // n and m of {n,m}
  static constexpr int kMaxDepth = 256;                  // nested groups
  // compile() is fed hostile input on the HTTP thread and on every rank; these bound its time
  // (under 100 ms in a Release build) and memory (a few tens of MB at most). For scale: `.{1000}`
  // takes 8,001 DFA states, `(a|b)*a(a|b){13}` 16,384; `(a|b)*a(a|b){14}` is too complex.
  static constexpr int64_t kMaxNfa = 400'000;        // NFA states + edges, repeats expanded (counted first)
  static constexpr int64_t kMaxStates = 20'000;      // DFA states, before dead ones are removed
  static constexpr int64_t kMaxTable = 2'000'000;    // DFA states x byte classes (int32 entries)
  static constexpr int64_t kMaxWork = 12'000'000;    // subset construction: NFA states visited, sets sorted
  static constexpr int64_t kMaxSubsets = 2'000'000;  // NFA state ids kept as the DFA states' keys

  // What the DFA reads: the text itself, or the text as the inside of a JSON string (JSON
  // Schema's `pattern`): each character the way a canonical JSON writer escapes it (`\"`, `\\`,
  // `\b \f \n \r \t`, `\u00xx` for the other control characters, everything else raw UTF-8),
  // so that the JSON lexer and the DFA agree byte for byte and a match is a valid string body.
  enum class Target : uint8_t { text, json_string };

  // Throws dpa::Error with a message fit for the API user: what is wrong and, where there is one,
  // the byte offset in the pattern ("at offset 3: backreferences (\1) are not supported").
  static std::shared_ptr<const Regex> compile(std::string_view pattern, Target target = Target::text);
  // The same through a process-wide cache by (target, pattern) (compile_cache.h): what the
  // frontend and the engine call, so a pattern sent again is not compiled again.
  static std::shared_ptr<const Regex> compile_cached(std::string_view pattern, Target target = Target::text);
  std::size_t bytes() const;  // memory held, about
  // The texts both DFAs match (the product automaton, its dead states removed), or null when no
  // text does. Throws dpa::Error past the same caps as compile() (states, table).
  static std::shared_ptr<const Regex> intersect(const Regex& a, const Regex& b);

  int32_t start() const { return 0; }
  // The state after byte b, or -1 when no full match continues the text with it. `state` is one
  // of this DFA's (0 <= state < states()).
  int32_t next(int32_t state, uint8_t b) const {
    return table_[static_cast<std::size_t>(state) * n_classes_ + class_of_[b]];
  }
  bool accepting(int32_t state) const { return accepting_[static_cast<std::size_t>(state)] != 0; }
  int64_t states() const { return static_cast<int64_t>(accepting_.size()); }
  // Its states' token masks, shared by every request that holds this compiled pattern
  // (OutputConstraint fills and reads them; mask_memo.h). Not part of the DFA's value.
  MaskMemo& masks() const { return masks_; }

 private:
  Regex() = default;
  static std::shared_ptr<const Regex> adopt(regex_detail::Tables&& t);  // the DFA as built
  std::size_t n_classes_ = 1;
  std::array<uint8_t, 256> class_of_{};  // byte -> equivalence class (bytes no state tells apart)
  std::vector<int32_t> table_;           // [state * n_classes_ + class] -> state or -1
  std::vector<uint8_t> accepting_;
  mutable MaskMemo masks_;
};

// The text written so far, byte by byte: feed() takes a byte when some full match continues the
// text with it, and leaves the state unchanged otherwise. A pointer and an int, cheap to copy.
class RegexPrefix {
 public:
  explicit RegexPrefix(const Regex& re) : re_(&re), state_(re.start()) {}  // re outlives it
  RegexPrefix(const Regex& re, int32_t state) : re_(&re), state_(state) {}  // one of re's states
  bool feed(uint8_t c) {
    const int32_t t = re_->next(state_, c);
    if (t < 0) return false;
    state_ = t;
    return true;
  }
  bool feed(std::string_view bytes) { return feed_all(*this, bytes); }  // all of them, or false and unchanged
  bool complete() const { return re_->accepting(state_); }              // the text so far is a full match
  int32_t state() const { return state_; }

 private:
  const Regex* re_;
  int32_t state_;
};

}  // namespace dpa::engine
