// Structured output to a context-free grammar (vLLM's guided_grammar and structured_outputs
// grammar, SGLang's ebnf): the grammar text compiled once into flat rules, and a byte-level
// recognizer of the texts the grammar's `root` rule derives, for TokenTrie's mask walk
// (structured_output.h).
//
// Syntax: GBNF, as llama.cpp documents it and xgrammar reads it. `name ::= alternatives`, names of
// ASCII letters, digits, `-` and `_`; `|` between alternatives (an alternative may be empty);
// sequences; `( ... )`; postfix `*` `+` `?` `{m}` `{m,}` `{m,n}` (`{0,n}`), counts up to
// kMaxRepeat; "literals" with the escapes \n \t \r \f \v \a \b \0 \\ \" \' \[ \] \- \^ \/ \xHH
// \uHHHH \UHHHHHHHH; classes [a-z0-9_] and [^"\\] (the same escapes; `-` first or last is
// literal); `#` comments to the end of the line. `.` is refused: llama.cpp reads it as any
// character, xgrammar (vLLM's and SGLang's engine) as part of a rule name. Whitespace, newlines
// included, separates symbols anywhere (GBNF's newline rules are a subset): a rule ends where the
// next `name ::=` begins. The start rule is `root`.
//
// Semantics: the output must be a string `root` derives. Characters are Unicode code points and
// the output is valid UTF-8 (RFC 3629): the recognizer reads bytes, and a class takes a character
// whole (its first byte only where some character of the class starts with it).
//
// Refused at compile(), with what is wrong and where (line and column): syntax errors, undefined
// or twice-defined rules, a missing `root`, empty classes, surrogate or out-of-range code points,
// repeat counts past kMaxRepeat, `{m,n}` with m > n, rules reachable from root that can never end
// (every alternative leads back into them), left recursion (a rule that can reach itself before
// reading a character: the recognizer below would loop; write `expr ::= term ("+" term)*`), and
// grammars past the size caps below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/mask_memo.h"
#include "engine/recognizer_util.h"

namespace dpa::engine {

class GrammarPrefix;

namespace grammar_detail {

// One position of the compiled grammar. A rule's alternatives lie one after the other in
// Rules::elements, each a run of symbols closed by an `end`.
enum class Kind : uint8_t {
  byte,  // the byte `byte` (literals are written out as their UTF-8 bytes)
  cls,   // one character of classes[arg]
  rule,  // the rule arg
  end,   // the end of an alternative of rule arg
};
struct Element {
  Kind kind = Kind::end;
  uint8_t byte = 0;
  int32_t arg = 0;
};

// A set of code points, surrogates never included: ASCII as a bitmap, the rest as ranges.
struct CharClass {
  uint64_t ascii[2] = {0, 0};
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // >= 0x80, sorted, disjoint, inclusive
  bool has_ascii(uint8_t c) const { return (ascii[c >> 6] >> (c & 63)) & 1u; }
  bool intersects(uint32_t lo, uint32_t hi) const;  // some code point of [lo, hi] is in the set
};

struct Rules {
  std::vector<Element> elements;
  std::vector<CharClass> classes;
  std::vector<int32_t> alt_begin;   // rule r's alternatives: alts[alt_begin[r] .. alt_begin[r + 1])
  std::vector<int32_t> alts;        // the first position of each alternative
  std::vector<std::string> origin;  // each rule's name (a generated one: the rule it was written in)
  int32_t root = 0;
};

// The text to rules, checked (grammar_parse.cpp); throws dpa::Error with the message for the user.
Rules parse(std::string_view text);

}  // namespace grammar_detail

// A compiled grammar. Immutable but for its mask memo and state names; shared by the requests
// that send the same text and read from several threads at once.
class Grammar {
 public:
  // compile() is fed hostile text on the HTTP thread and on every rank: these bound its work and
  // memory (a few MB).
  static constexpr std::size_t kMaxText = 64 * 1024;  // bytes of grammar text
  static constexpr int64_t kMaxRepeat = 1000;         // m and n of {m,n}
  static constexpr int64_t kMaxElements = 200'000;    // positions, repetitions expanded
  static constexpr int64_t kMaxRules = 50'000;        // rules, those made for groups and repetitions included
  static constexpr int kMaxNesting = 256;             // nested parentheses
  // The recognizer's limits (GrammarPrefix): a text whose parse would pass them is not written
  // (the bytes that would are refused); where that leaves nothing to write, and where a mask's
  // walk passes kMaxWalkWork, the request ends with an error (OutputConstraint::failed).
  static constexpr std::size_t kMaxItems = 2048;      // parse positions followed at once
  static constexpr std::size_t kMaxClosure = 32768;   // grammar positions one byte's step may visit
  static constexpr int32_t kMaxDepth = 1024;          // rules open (entered and not finished) in one parse
  static constexpr int64_t kMaxWalkWork = 4'000'000;  // parse steps of one token mask (~0.2 s)

  // Throws dpa::Error with a message fit for the API user ("line 2, column 9: expected '::='
  // after the rule name 'value'").
  static std::shared_ptr<const Grammar> compile(std::string_view text);
  // The same through a process-wide cache by text (compile_cache.h), as Regex::compile_cached.
  static std::shared_ptr<const Grammar> compile_cached(std::string_view text);
  std::size_t bytes() const;  // memory held, about (the memo's masks not counted)
  const grammar_detail::Rules& rules() const { return r_; }

  // Token masks by recognizer state, shared by every request holding this grammar (mask_memo.h):
  // a state is named by state_id() of its canonical form (GrammarPrefix::key()).
  MaskMemo& masks() const { return masks_; }
  // A small id for a state's key, the same for every caller; -1 when the table is full (64K
  // states or 16 MiB of keys) or the key is empty.
  int32_t state_id(const std::string& key) const;

 private:
  Grammar() = default;
  grammar_detail::Rules r_;
  mutable MaskMemo masks_;
  mutable std::mutex ids_mu_;
  mutable std::unordered_map<std::string, int32_t> ids_;
  mutable std::size_t id_bytes_ = 0;
};

namespace grammar_detail {
class Context;  // grammar.cpp: a recognizer's stack arena and scratch, shared by its copies
}

// The text written so far, byte by byte: feed() takes a byte when some string of the grammar
// continues the text with it (within the limits above), and leaves the state unchanged otherwise.
//
// Why this algorithm: the token trie's walk copies the state at every node it enters, so a
// state must be small and cheap to copy. It is a pushdown recognizer run on every parse at once:
// the state is a short sorted vector of items (a grammar position where a character is read next,
// a partly read UTF-8 character, and the parse's stack of return positions), and each stack is
// an id into an arena of frames (return position, parent frame) kept per recognizer and shared
// by its copies. Frames are hash-consed, so the parses that share a stack share its id and the
// items form a set; a call in tail position pushes nothing, so `x*` (a right-recursive rule)
// runs in constant stack. Copying a state copies the item vector only. The walk (grammar.cpp)
// goes further: it names each distinct state it meets and keeps their transitions, so the many
// trie paths that end in the same state (every plain character inside a string) are a table
// lookup, not a parse step. An Earley parser would take left recursion and ambiguity without
// limits, but its state is the whole chart since the start of the text; this state is the
// parses' frontier only.
class GrammarPrefix {
 public:
  struct Item {
    int32_t pos;    // an element of kind byte or cls
    int32_t frame;  // the parse's stack: a frame of the arena, -1: empty (root's level)
    uint32_t utf8;  // at a cls: 0, or the UTF-8 character being read (grammar.cpp: partial())
    bool operator==(const Item&) const = default;
    bool operator<(const Item& o) const {
      return pos != o.pos ? pos < o.pos : frame != o.frame ? frame < o.frame : utf8 < o.utf8;
    }
  };

  explicit GrammarPrefix(const Grammar& g);  // at the start; g outlives it
  bool feed(uint8_t c);
  bool feed(std::string_view bytes) { return feed_all(*this, bytes); }  // all of them, or false and unchanged
  bool complete() const { return complete_; }  // the text so far is a string of the grammar
  std::size_t n_items() const { return items_.size(); }
  // The same state as o, told by ids (o a copy of this recognizer or of its ancestors).
  bool same_as(const GrammarPrefix& o) const;
  // The state in a form independent of the arena (each item with its whole stack), for masks kept
  // across recognizers; empty past 4 KiB (too deep a state to be worth keeping).
  std::string key() const;
  // A long output leaves frames no parse holds any more: when they are most of the arena, this
  // state moves to a fresh arena with its live frames (its copies keep the old one).
  void compact_if_sparse();
  std::size_t arena_frames() const;
  // Some parse was dropped at a limit (Grammar::kMaxItems, kMaxClosure, kMaxDepth) by a step of
  // this recognizer or its copies since their last mask walk: only then may a state that is not
  // complete take no byte (for tests and the fuzzer).
  bool met_limit() const;

 private:
  friend class TokenTrie;  // the mask walk (grammar.cpp)
  const Grammar* g_;
  std::shared_ptr<grammar_detail::Context> cx_;
  SmallVec<Item, 8> items_;
  bool complete_ = false;
};

// What a mask walk over a grammar state met (TokenTrie::allowed's for GrammarPrefix).
struct GrammarWalk {
  bool limited = false;      // some parse was dropped at kMaxItems, kMaxClosure or kMaxDepth
  bool over_budget = false;  // the walk stopped at kMaxWalkWork: the mask is partial
};

}  // namespace dpa::engine
