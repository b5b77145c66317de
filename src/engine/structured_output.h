// Structured output: byte-level recognizers of what the output may be (a JSON object, for
// OpenAI's response_format {"type": "json_object"}; one of fixed strings, for vLLM's
// guided_choice), and the vocabulary as a trie of token bytes, so that the tokens a recognizer
// state can take next are found in one walk (a subtree whose first bytes are refused is skipped
// whole). The engine bans the others before the draw, and allows the end of the sequence only
// where the recognizer says the text is complete.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dpa::engine {

class SchemaPrefix;  // json_schema.h
class Regex;         // regex.h
class RegexPrefix;
class GrammarPrefix;  // grammar.h
struct GrammarWalk;

// A JSON text (RFC 8259) being written, byte by byte; its top-level value must be an object.
// feed() takes a byte when some valid text continues what was fed with it, and leaves the state
// unchanged otherwise. Strings must be valid UTF-8 (no overlong forms, surrogates or values past
// U+10FFFF); whitespace is allowed wherever RFC 8259 allows it, but not after the top-level
// object (the text ends there), and in runs of at most kMaxWhitespace bytes (a model drifting
// into whitespace would otherwise fill max_tokens with it, as early constrained decoders did).
// Nesting deeper than kMaxDepth is refused.
class JsonPrefix {
 public:
  static constexpr std::size_t kMaxDepth = 64;
  static constexpr uint8_t kMaxWhitespace = 32;
  bool feed(uint8_t c);
  bool feed(std::string_view bytes);  // all of them, or false (then the state is as before)
  bool complete() const { return st_ == St::done; }
  // Inside a string, between characters and escapes: any byte string without '"', '\\' or
  // control characters that is valid UTF-8 from here (TokenTrie's plain tokens) keeps it so.
  bool in_plain_string() const { return st_ == St::string && utf8_left_ == 0 && !low_needed_; }
  int64_t plain_room() const { return in_plain_string() ? INT64_MAX : -1; }  // as SchemaPrefix's

 private:
  enum class St : uint8_t {
    start,         // before the top-level object: whitespace or '{'
    obj_first,     // after '{': whitespace, a key or '}'
    obj_key,       // after ',' in an object: whitespace or a key
    colon,         // after a key: whitespace or ':'
    value,         // after ':' or ',' in an array: whitespace or a value
    arr_first,     // after '[': whitespace, a value or ']'
    after_value,   // after a value inside a container: whitespace, ',' or the closer
    string,        // inside a string (key_ tells which)
    escape,        // after '\'
    unicode,       // in \uXXXX, hex_left_ digits to go
    num_minus,     // after '-'
    num_zero,      // after a leading 0
    num_int,       // in the integer digits
    num_dot,       // after '.'
    num_frac,      // in the fraction digits
    num_e,         // after 'e' / 'E'
    num_esign,     // after the exponent's sign
    num_exp,       // in the exponent digits
    literal,       // in true / false / null
    done,          // the top-level object is closed
  };
  bool step(uint8_t c);  // feed() less the whitespace run's count
  bool take_ws();
  bool open(char kind);
  void value_done();
  bool value_start(uint8_t c);
  bool string_byte(uint8_t c);

  St st_ = St::start;
  bool key_ = false;        // the string being read is an object key
  uint8_t hex_left_ = 0;    // \uXXXX digits to go
  uint16_t hex_value_ = 0;  // its digits so far
  bool low_needed_ = false; // after a high surrogate's escape: its low half's escape comes next
  uint8_t utf8_left_ = 0;   // UTF-8 continuation bytes to go in a string
  uint8_t utf8_lo_ = 0x80, utf8_hi_ = 0xbf;  // the next continuation byte's range
  uint8_t lit_ = 0, lit_at_ = 0;             // which literal, and how much of it was read
  uint8_t ws_run_ = 0;       // structural whitespace bytes in a row
  bool took_ws_ = false;     // the byte being fed was one
  std::string stack_;       // '{' or '[' per open container
};

// One of a list of strings, byte by byte: feed() takes a byte when some string starts with the
// text so far and it; complete() when the text is one of them (a longer one may still follow).
// The list must be sorted and outlive the recognizer.
class ChoicePrefix {
 public:
  explicit ChoicePrefix(const std::vector<std::string>& sorted) : c_(&sorted), hi_(sorted.size()) {}
  bool feed(uint8_t c);
  bool feed(std::string_view bytes);  // all of them, or false (then the state is as before)
  bool complete() const { return lo_ < hi_ && (*c_)[lo_].size() == depth_; }

 private:
  const std::vector<std::string>* c_;
  std::size_t lo_ = 0, hi_ = 0;  // the strings [lo_, hi_) start with the text so far
  std::size_t depth_ = 0;        // its length
};

// Whether a token mask (TokenTrie::allowed's) has id's bit set.
inline bool mask_allows(const std::vector<uint32_t>& mask, std::size_t id) { return (mask[id >> 5] >> (id & 31)) & 1u; }

// The vocabulary's token bytes as a trie. Tokens with no bytes (special tokens, ids the tokenizer
// does not have) are never allowed. Inside a string, where a JSON answer spends most of its
// tokens and almost every token is allowed, the plain tokens (no quote, backslash or control
// byte, valid UTF-8) are taken as a set and only the others are walked.
class TokenTrie {
 public:
  explicit TokenTrie(const std::vector<std::string>& token_bytes);
  int64_t vocab_size() const { return vocab_; }
  uint64_t id() const { return id_; }  // unique in the process (keys masks kept for this vocabulary)
  int64_t mask_words() const { return (vocab_ + 31) / 32; }
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<std::size_t>(id)]; }
  // Bit id % 32 of allowed[id / 32] set for every token all of whose bytes `from` takes, clear
  // for the others (and past the vocabulary); allowed.size() == mask_words().
  void allowed(const JsonPrefix& from, std::vector<uint32_t>& allowed) const;
  void allowed(const ChoicePrefix& from, std::vector<uint32_t>& allowed) const;
  void allowed(const SchemaPrefix& from, std::vector<uint32_t>& allowed) const;
  void allowed(const RegexPrefix& from, std::vector<uint32_t>& allowed) const;
  // grammar.cpp: the states the walk meets are named and their transitions kept, so paths that
  // reach the same state are table lookups. Says whether a limit or the work cap was met.
  GrammarWalk allowed(const GrammarPrefix& from, std::vector<uint32_t>& allowed) const;

 private:
  struct Node {
    int32_t first_child = -1, next_sibling = -1;
    int32_t token = -1;  // the token whose bytes end here (the first one, when several do)
    uint8_t byte = 0;
  };
  struct Trie {
    std::vector<Node> nodes{Node{}};  // nodes[0]: the root
    std::vector<int32_t> same_bytes;  // ids whose bytes equal an earlier id's: (id, that id) pairs
    void insert(const std::string& bytes, int32_t id);
    template <typename State>
    void walk(int32_t node, const State& state, std::vector<uint32_t>& allowed) const;
    void copy_same(std::vector<uint32_t>& allowed) const;  // ids of the same bytes as their first
  };
  // all_ in depth-first order, for recognizers whose state is a small value (a regex's DFA state):
  // the walk is one pass over these arrays, a refused subtree skipped to its end index, instead
  // of chasing child and sibling links (5-10x fewer cycles a node on a vocabulary's trie).
  struct Flat {
    std::vector<uint8_t> byte;
    std::vector<uint16_t> depth;  // 1: a child of the root
    std::vector<uint32_t> bit;    // Node::token, or (none) the first bit past the mask's words
    std::vector<int32_t> end;     // the index past the node's subtree
    std::vector<int32_t> node;    // the node in the Trie
    std::size_t max_depth = 0;
    Flat(const Trie& t, int64_t vocab);
  };
  template <typename Json>
  void allowed_json(const Json& from, std::vector<uint32_t>& allowed) const;
  // Inside a string under a pattern (SchemaPrefix::pattern_state): the string's bytes on the DFA
  // over flat_, the schema's recognizer only below a closing quote.
  void allowed_pattern_string(const SchemaPrefix& from, const Regex& re, int32_t state, std::vector<uint32_t>& allowed) const;
  // The walk over flat_ of a DFA's recognizer: allowed gets every token it takes whole; at a node
  // it refuses, on_refused(node index, the state before it, the bytes down to it) may add some.
  template <typename OnRefused>
  void walk_flat(const RegexPrefix& from, std::vector<uint32_t>& allowed, OnRefused on_refused) const;
  // Plain tokens by their characters (code points), for strings with a maxLength: up_to_[c] has
  // those of at most c characters (c <= kShortChars); the longer ones are walked, in long_.
  static constexpr int64_t kShortChars = 64;
  uint64_t id_ = 0;
  int64_t vocab_ = 0;
  std::vector<std::string> bytes_;
  Trie all_;                    // every token with bytes
  Trie rest_;                   // the tokens that are not plain
  Trie long_;                   // rest_'s, and the plain ones of more than kShortChars characters
  std::unique_ptr<const Flat> flat_;  // all_'s
  std::vector<uint32_t> plain_;  // a bit per id: a plain token (see the class comment)
  std::vector<std::vector<uint32_t>> up_to_;
};

}  // namespace dpa::engine
