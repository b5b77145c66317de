// Structured output to a JSON Schema (OpenAI's response_format {"type": "json_schema"}, vLLM's
// guided_json): the schema compiled once into a graph of nodes, and a byte-level recognizer of
// the JSON texts that conform to it, for TokenTrie::allowed (structured_output.h).
//
// Supported (JSON Schema 2020-12 spelling): type (a name or a list), enum, const, properties,
// required, additionalProperties, items, prefixItems, minItems, maxItems, minLength, maxLength,
// pattern (regex.h's syntax; a search, as JSON Schema says, unless anchored by ^ and $; beside
// minLength / maxLength up to Regex::kMaxRepeat; at most kMaxPatterns distinct ones), minimum / maximum /
// exclusiveMinimum / exclusiveMaximum (on integers, and exactly as decimals on numbers),
// multipleOf (q = p·10^-k, from its text, p below 2^31: on integers as x ≡ 0 modulo p less the
// 2s and 5s of 10^k, with the bounds; on numbers exactly as decimals, x having no nonzero digit
// past the k-th fraction digit and x·10^k ≡ 0 mod p, with the bounds where q is at most 1; no
// digit is taken that no multiple within the bounds continues), anyOf,
// oneOf (as anyOf: that exactly one branch matches is not enforced), allOf of one schema, $ref to
// a JSON pointer into the document (recursion allowed), $defs / definitions, uniqueItems where
// every item is a scalar (a string, number, boolean or null; enums and consts of them; through
// anyOf, $ref and type lists too): no two items equal as JSON Schema compares values (numbers by
// value, so 1, 1.0 and 1e0 are one value and -0 is 0; strings by their characters, so "a" and
// "\u0061" are one), and no item begun that cannot end as a value the earlier items have not
// had, nor an array that cannot reach minItems distinct values. format on strings (2020-12's
// format-assertion vocabulary, as OpenAI's strict mode and vLLM enforce it): date, time,
// date-time, duration, uuid, ipv4, ipv6, hostname, email, uri, each a regex DFA over the
// string's JSON-escaped bytes built once per process (json_schema_compile.cpp's format_re says
// the exact forms; README.md too), beside pattern and lengths the product of all; not counted
// among kMaxPatterns, but at most kMaxPatterns distinct format-and-pattern pairs. Other format
// names are annotations; format beside $ref / allOf / anyOf / oneOf is ignored, beside enum /
// const it drops the string values not of the format, and on a node whose strings are
// uniqueItems' items it is dropped (uniqueness is kept). Other annotations are ignored.
// Anything else is refused at compile(), naming the keyword and where it is; so are $ref, allOf,
// anyOf and oneOf beside other assertions (annotations and $defs aside), enum / const beside any
// but type, bounds on numbers beyond kMaxBoundExponent; multipleOf not above 0, beyond
// kMaxBoundExponent, with p from 2^31, or above 1 beside bounds on a schema admitting
// non-integers (a prefix would have to reach a multiple within the bounds in one of its runs of
// integer digits, not only some multiple and some value within them); and uniqueItems: true
// where an item may be an object or an array, on strings under a pattern, on numbers under
// multipleOf (integers under it are followed), beside prefixItems unless every item can take
// kMaxUniqueItems values or more, and with a minItems above kMaxUniqueItems. (uniqueItems with a
// minItems above the distinct values the items can take admits no array.)
//
// Limits, each of which only narrows what may be written (never to a dead end):
//   - lexical rules as JsonPrefix's (UTF-8, escapes, whitespace runs of at most 32 bytes, none
//     after the value, nesting depth at most 64; values that would need deeper nesting are not
//     started);
//   - object keys, enum and const values are accepted in their canonical form only (Boost.JSON's
//     serialization; enum/const objects and arrays compact); so are the escapes in a string
//     under a pattern (\" \\ \b \f \n \r \t, \u00xx for other control characters, the rest raw);
//   - integers under bounds, or under a multipleOf that not every integer meets, are kept
//     within int64 and written without "-0";
//   - numbers under bounds or multipleOf are written without an exponent (every value in range
//     has a plain decimal form; "-0" and "-0.0" are 0);
//   - at most 64 declared properties per object schema; at most kMaxExtraKeys undeclared keys per
//     object; an undeclared key is told from earlier ones by a 64-bit hash of its bytes;
//   - at most kMaxAlternatives parses are followed at once (anyOf branches, type lists, enums);
//     past that the later ones are dropped (see SchemaPrefix::feed);
//   - at most kMaxUniqueItems items in a uniqueItems array (past them ',' is refused); an item is
//     told from the earlier ones by a 64-bit hash of its value (json_schema_internal.h's
//     value_hash: equal values always hash equal; two different ones that collide are taken as
//     equal, odds about 2^-64 a pair).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/recognizer_util.h"

namespace dpa::engine {

class SchemaPrefix;
class Regex;  // regex.h
namespace schema_detail {
struct NumberBounds;  // json_schema_internal.h
}

// A compiled schema: immutable, shared by the recognizers of many requests (safe to read from
// several threads).
class JsonSchema {
 public:
  static constexpr std::size_t kMaxText = 64 * 1024;  // bytes of schema text
  static constexpr std::size_t kMaxNodes = 4096;      // subschemas
  static constexpr std::size_t kMaxPatterns = 16;     // distinct `pattern` texts (each a DFA to build)
  static constexpr int64_t kMaxBoundExponent = 10000;  // bounds on numbers: 0, or from 1e-10000 to below 1e10000 in magnitude
  // Compiles the schema document (JSON text). Throws dpa::Error with a message fit for the API
  // user (which keyword, at which JSON pointer) when the text is not JSON, not a schema, uses
  // what is not supported, or admits no value at all.
  static std::shared_ptr<const JsonSchema> compile(std::string_view schema_json);
  // The same through a process-wide cache by text (compile_cache.h): what the frontend and the
  // engine call, so a schema sent with request after request is compiled once per process.
  static std::shared_ptr<const JsonSchema> compile_cached(std::string_view schema_json);
  std::size_t bytes() const;  // memory held, about (its pattern DFAs included)

 private:
  friend class SchemaPrefix;
  friend class SchemaCompiler;
  static constexpr uint8_t kNoWitness = 255;  // min_depth of a node no value (within the depth limit) conforms to
  struct Node {
    uint8_t types = 0;             // kinds of value it admits (json_schema.cpp's type bits)
    std::vector<uint32_t> leaves;  // the nodes a value of it is one of: anyOf and $ref resolved
    // Set while compiling, folded into leaves afterwards:
    int64_t alias = -1;            // $ref / allOf target
    std::vector<uint32_t> any_of;  // anyOf / oneOf branches
    // enum / const: the canonical texts, sorted, and each one's nesting depth.
    bool is_enum = false;
    std::vector<std::string> enum_text;
    std::vector<uint8_t> enum_depth;
    std::vector<uint64_t> enum_hash;  // each one's value hash (json_schema_internal.h's value_hash)
    // Objects: declared names (canonical encodings, sorted) and their schemas.
    std::vector<std::string> names;
    std::vector<uint32_t> props;
    uint64_t required = 0;    // a bit per names[i]
    uint32_t additional = 0;  // schema of undeclared keys' values (the node of `false` refuses them)
    // Arrays.
    std::vector<uint32_t> prefix_items;
    uint32_t items = 0;
    uint64_t min_items = 0, max_items = UINT64_MAX;
    // uniqueItems: true (every item a scalar): the distinct values the items can take, up to
    // SchemaPrefix::kMaxUniqueItems (that many or more: kMaxUniqueItems).
    bool unique = false;
    uint32_t unique_values = 0;
    // Strings, in code points; `pattern` as a DFA over the string's JSON-escaped bytes
    // (Regex::Target::json_string), with JSON Schema's search semantics folded in, and an
    // asserted `format`'s DFA with it (the product of the two), each cut to the lengths.
    uint64_t min_length = 0, max_length = UINT64_MAX;
    std::shared_ptr<const Regex> pattern;
    bool format_only = false;  // `pattern` is a format's DFA alone (lengths aside)
    // Integers (a schema admitting integers only): within [lo, hi] (multiples of int_mod), and
    // multiples of int_mod (multipleOf's, as it bears on integers).
    bool bounded = false;
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    uint64_t int_mod = 1;
    // Numbers (a schema admitting non-integers too) under multipleOf q = mult_p·10^-mult_k
    // (mult_p 0: none).
    uint32_t mult_p = 0, mult_k = 0;
    // Numbers (a schema admitting non-integers too): null without bounds.
    std::shared_ptr<const schema_detail::NumberBounds> numbers;
    // The least nesting a conforming value needs (containers, this one included), per kind.
    uint8_t min_depth = kNoWitness, min_depth_object = kNoWitness, min_depth_array = kNoWitness;
    uint32_t item(uint64_t i) const { return i < prefix_items.size() ? prefix_items[i] : items; }
  };
  std::vector<Node> nodes_;  // [0]: the schema `true`, [1]: `false`
  uint32_t root_ = 0;
};

// A JSON text conforming to a schema, being written byte by byte. Several parses may be alive at
// once (the alternatives of anyOf, of a type list, of enum values): a byte is taken when some
// parse takes it, and the parses that refuse it end. Every reachable state has a continuing byte
// or is complete.
class SchemaPrefix {
 public:
  static constexpr std::size_t kMaxDepth = 64;
  static constexpr uint8_t kMaxWhitespace = 32;
  static constexpr std::size_t kMaxAlternatives = 32;
  static constexpr uint16_t kMaxExtraKeys = 64;
  // Items of a uniqueItems array: at most this many (past them ',' is refused). While an item is
  // written at most kMaxUniqueItems - 1 values are taken, fewer than the ways to end any string
  // character but the last one of a \uXXXX escape or of a UTF-8 sequence: those two are counted.
  static constexpr uint16_t kMaxUniqueItems = 64;
  explicit SchemaPrefix(const JsonSchema& schema);  // the schema outlives the recognizer
  // Takes c iff some conforming text continues what was fed with c; unchanged otherwise.
  bool feed(uint8_t c);
  bool feed(std::string_view bytes);  // all of them, or false (then the state is as before)
  // What was fed is a whole conforming text (nothing, not even whitespace, may follow).
  bool complete() const;
  // Where every parse is inside a string between characters (a value string, not an enum value;
  // a key only where an undeclared one may come): the most characters a run of TokenTrie's plain
  // tokens may add (kNoLimit: any; maxLength sets the others), for the trie's precomputed sets.
  // -1 elsewhere.
  static constexpr int64_t kNoLimit = INT64_MAX;
  int64_t plain_room() const;
  bool in_plain_string() const { return plain_room() == kNoLimit; }
  // Where the one parse is inside a string under a pattern: that pattern's DFA, and its state in
  // `state` (TokenTrie walks the string's bytes on the DFA alone, and the schema only past the
  // closing quote); null elsewhere.
  const Regex* pattern_state(int32_t& state) const;

 private:
  // An open container of one parse, the hash of an undeclared key its innermost object has had,
  // or the value hash of an item its innermost array (a uniqueItems one) has had (kept above that
  // container's frame, popped with it).
  struct Frame {
    uint64_t word = 0;      // object: declared names seen (bit i); array: items begun; key, item: its hash
    uint32_t node = 0;      // the container's schema node
    uint16_t n_extra = 0;   // object: undeclared keys so far
    uint8_t kind = 0;       // Kind in json_schema.cpp
    uint8_t unused = 0;
    bool operator==(const Frame&) const = default;
  };
  // Where one parse is: the lexical state of what it reads, and how many frames it has (its
  // frames follow the earlier parses' in frames_).
  struct Top {
    uint64_t num = 0;        // bounded integer: magnitude so far; key: hash of its bytes so far
    uint32_t node = 0;       // the node of the value read (or, before one, to be read)
    uint32_t lo = 0, hi = 0; // key or enum: the candidates [lo, hi) of the sorted texts
    uint32_t at = 0;         // key or enum: bytes matched; string value: code points so far
    uint16_t n_frames = 0;
    uint16_t hex_value = 0;  // the \uXXXX digits so far
    uint8_t phase = 0;       // Phase in json_schema.cpp
    uint8_t depth = 0;       // containers open
    uint8_t ws = 0;          // structural whitespace bytes in a row
    uint8_t flags = 0;       // Flag bits in json_schema.cpp
    uint8_t utf8_left = 0, utf8_lo = 0x80, utf8_hi = 0xbf;
    uint8_t hex_left = 0;
    uint8_t lit = 0, lit_at = 0;
    int32_t re = 0;          // string value with a pattern: the DFA's state
    // An item of a uniqueItems array (flags has kItem): its value's hash so far (value_hash in
    // json_schema_internal.h). A string: vh is the FNV of its decoded bytes, vpoint a high
    // surrogate waiting for its low half. A number: vh the sig's hash up to its last nonzero
    // digit, vall with the zeros since, vpoint the point's place so far, vexp the exponent.
    uint64_t vh = 0, vall = 0, vpoint = 0, vexp = 0;
    bool operator==(const Top&) const = default;
  };
  struct Out {
    SmallVec<Top, 2> tops;
    SmallVec<Frame, 16> frames;
  };
  enum class Did : uint8_t { drop, keep, emitted };
  Did step(Top& t, std::size_t base, uint8_t c, Out& out) const;
  Did value_start(Top& t, std::size_t base, uint8_t c, Out& out) const;
  Did key_byte(Top& t, uint8_t c, Out& out) const;
  Did key_close(Top& t, Out& out) const;
  Did value_string_byte(Top& t, uint8_t c, Out& out) const;
  Did number_byte(Top& t, std::size_t base, uint8_t c, Out& out) const;
  Did close_container(Top& t, Out& out) const;
  bool key_possible(const Top& t, std::size_t obj, const Out& out) const;
  bool extra_ok(const Top& t, const Frame& obj) const;
  bool declared_viable(const Top& t, const Frame& obj, uint32_t lo, uint32_t hi) const;
  bool number_complete(const Top& t) const;
  bool choice_exact(const Top& t) const;
  bool value_ended(Top& t, Out& out) const;
  bool item_viable(const Top& t, const Frame* frames, std::size_t n) const;
  Did item_checked(Did d, const Top& t, std::size_t base, const Out& out) const;
  static void merge(Out& out);

  const JsonSchema* schema_;
  Out st_;
};

}  // namespace dpa::engine
