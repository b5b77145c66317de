// The JSON Schema recognizer on hand-written cases (each keyword's edges, compile errors), and
// the token trie's allowed set against feeding each token alone. The differential tests against
// an independent validator are in test_json_schema.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/json_schema.h"
#include "engine/structured_output.h"
#include "json_schema_test_util.h"

namespace {
using dpa::engine::JsonSchema;
using dpa::engine::mask_allows;
using dpa::engine::SchemaPrefix;
using dpa::engine::TokenTrie;
using dpa::engine::test::accepts;
using dpa::engine::test::compile;
using dpa::engine::test::completes;
using dpa::engine::test::completion;
using dpa::engine::test::search_order;
using dpa::engine::test::feed_bytes;
using Rng = std::mt19937_64;

TEST(JsonSchema, RequiredKeysGateTheClose) {
  const auto s = compile(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                             "required": ["a", "b"], "additionalProperties": false})");
  EXPECT_TRUE(accepts(*s, R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(accepts(*s, R"({"b":"x","a":1})"));  // any order
  EXPECT_EQ(feed_bytes(*s, R"({"a":1})").taken, 6u);       // '}' refused: b missing
  EXPECT_EQ(feed_bytes(*s, R"({})").taken, 1u);
  EXPECT_EQ(feed_bytes(*s, R"({"a":1,"a":2})").taken, 8u);  // the duplicate's first byte past '"'
  EXPECT_EQ(feed_bytes(*s, R"({"a":1,"b":"x",)").taken, 14u);  // no key left to add
  EXPECT_EQ(feed_bytes(*s, R"({"c":1})").taken, 2u);
}

TEST(JsonSchema, AdditionalProperties) {
  const auto closed = compile(R"({"properties": {"name": {"type": "string"}}, "additionalProperties": false})");
  EXPECT_TRUE(accepts(*closed, R"({"name":"x"})"));
  EXPECT_TRUE(accepts(*closed, R"({})"));
  EXPECT_FALSE(accepts(*closed, R"({"nam":"x"})"));
  EXPECT_EQ(feed_bytes(*closed, R"({"nam":"x"})").taken, 5u);
  const auto open = compile(R"({"type": "object", "properties": {"name": {"type": "string"}}})");
  EXPECT_TRUE(accepts(*open, R"({"nam":1,"name":"x","names":[{}],"x":null})"));
  EXPECT_FALSE(accepts(*open, R"({"name":1})"));  // declared: its schema
  EXPECT_FALSE(accepts(*open, R"({"x":1,"x":2})"));  // undeclared keys once each too
  EXPECT_EQ(feed_bytes(*open, R"({"x":1,"x":2})").taken, 9u);  // the second key's closing quote
  const auto typed = compile(R"({"type": "object", "properties": {"ab": {"type": "string"}}, "additionalProperties": {"type": "integer"}})");
  // "a" is a prefix of the declared "ab" and an undeclared key of its own.
  EXPECT_TRUE(accepts(*typed, R"({"a":1,"ab":"s","abc":2})"));
  EXPECT_FALSE(accepts(*typed, R"({"a":"s"})"));
  EXPECT_FALSE(accepts(*typed, R"({"ab":1})"));
  EXPECT_FALSE(accepts(*typed, R"({"abc":"s"})"));
  // Keys in their canonical form only: \u0061 is "a" written otherwise.
  EXPECT_FALSE(accepts(*typed, R"({"\u0061b":"s"})"));
  EXPECT_TRUE(accepts(*typed, "{\"\\u001f\\n\xc3\xa9\":1}"));
  EXPECT_FALSE(accepts(*typed, R"({"\u001F":1})"));
  EXPECT_FALSE(accepts(*typed, R"({"\/":1})"));
}

TEST(JsonSchema, IntegerBounds) {
  const auto s = compile(R"({"type": "integer", "minimum": 10, "maximum": 99})");
  SchemaPrefix p(*s);
  EXPECT_FALSE(SchemaPrefix(p).feed(static_cast<uint8_t>('0')));
  EXPECT_FALSE(SchemaPrefix(p).feed(static_cast<uint8_t>('-')));
  ASSERT_TRUE(p.feed(static_cast<uint8_t>('1')));
  EXPECT_FALSE(p.complete());
  ASSERT_TRUE(p.feed(static_cast<uint8_t>('5')));
  EXPECT_TRUE(p.complete());
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('0')));
  EXPECT_FALSE(accepts(*s, "100"));
  EXPECT_FALSE(accepts(*s, "9"));
  EXPECT_FALSE(accepts(*s, "15.0"));
  for (int v = -20; v < 130; ++v) EXPECT_EQ(accepts(*s, std::to_string(v)), v >= 10 && v <= 99) << v;

  const auto neg = compile(R"({"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": -9})");
  for (int v = -1200; v < 20; ++v) EXPECT_EQ(accepts(*neg, std::to_string(v)), v > -1000 && v < -9) << v;
  EXPECT_EQ(feed_bytes(*neg, "-0").taken, 1u);
  EXPECT_EQ(feed_bytes(*neg, "5").taken, 0u);
  EXPECT_EQ(feed_bytes(*neg, "-1000").taken, 4u);

  const auto edges = compile(R"({"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807})");
  EXPECT_TRUE(accepts(*edges, "-9223372036854775808"));
  EXPECT_TRUE(accepts(*edges, "9223372036854775807"));
  EXPECT_FALSE(accepts(*edges, "9223372036854775808"));
  EXPECT_FALSE(accepts(*edges, "-9223372036854775809"));
  const auto frac = compile(R"({"type": "integer", "minimum": 0.5, "maximum": 2.5})");
  EXPECT_FALSE(accepts(*frac, "0"));
  EXPECT_TRUE(accepts(*frac, "1"));
  EXPECT_TRUE(accepts(*frac, "2"));
  EXPECT_FALSE(accepts(*frac, "3"));
  // Inside a container the number ends at the container's byte.
  const auto in = compile(R"({"type": "array", "items": {"type": "integer", "minimum": 5}})");
  EXPECT_TRUE(accepts(*in, "[5, 60,1000000]"));
  EXPECT_FALSE(accepts(*in, "[4]"));
  EXPECT_EQ(feed_bytes(*in, "[4]").taken, 2u);  // 4 may still become 40
  const auto plain = compile(R"({"type": "integer"})");
  EXPECT_TRUE(accepts(*plain, "-0"));
  EXPECT_FALSE(accepts(*plain, "1.5"));
  EXPECT_FALSE(accepts(*plain, "1e3"));
  EXPECT_FALSE(accepts(*plain, "01"));
  const auto number = compile(R"({"type": "number"})");
  EXPECT_TRUE(accepts(*number, "-1.5e+3"));
  EXPECT_FALSE(accepts(*number, "1."));
}

// Bounds on numbers: exact decimals, the tightest of each side, no exponent under them.
TEST(JsonSchema, NumberBounds) {
  struct Case {
    const char* bounds;
    std::vector<const char*> ok, bad;
  };
  const Case cases[] = {
      {R"("minimum": 0, "maximum": 1)",
       {"0", "1", "0.5", "1.0", "1.000", "0.999999", "-0", "-0.0", "0.0"},
       {"1.0000001", "-0.1", "2", "-1", "10", "1e0", "0.5e1", "01", ".5", "1.", "-", "+1"}},
      {R"("minimum": -2.5, "maximum": 3.75)",
       {"-2.5", "-2.50", "-2.4999", "3.75", "3.7499", "0", "3", "-2", "-0"},
       {"-2.51", "-2.5000001", "3.751", "-3", "4", "-25"}},
      {R"("exclusiveMinimum": 0)", {"0.0001", "5", "123456789.5", "0.000000000000000000000000001"}, {"0", "0.0", "-0", "-0.0", "1e3", "-1"}},
      {R"("minimum": 1e-3, "maximum": 1.5E2)", {"0.001", "0.0010", "0.01", "150", "150.0000", "2"}, {"0.0009999", "0", "150.01", "151", "1500"}},
      {R"("minimum": -100, "exclusiveMaximum": -0.5)", {"-0.50001", "-100", "-1", "-99.99"}, {"-0.5", "-0.50", "-100.1", "0", "-0", "1"}},
      {R"("exclusiveMinimum": -1, "exclusiveMaximum": 1)", {"0", "-0", "-0.999", "0.999", "0.5"}, {"-1", "1", "-1.0", "1.0"}},
      {R"("maximum": 2)", {"1.99999", "2", "2.0", "-1000000", "0.3"}, {"2.0000001", "2.1", "3", "20"}},
      {R"("exclusiveMaximum": 2)", {"1.9", "1.99999999999999999999", "-5"}, {"2", "2.0", "2.00000", "3"}},
      // The tightest bound wins; a tie goes to the exclusive one.
      {R"("minimum": 0, "exclusiveMinimum": 0, "maximum": 5, "exclusiveMaximum": 6)", {"0.1", "5", "4.99"}, {"0", "5.5", "5.01"}},
      {R"("minimum": 1, "exclusiveMinimum": 0, "exclusiveMaximum": 3, "maximum": 2.5)", {"1", "2.5"}, {"0.5", "2.6"}},
      {R"("minimum": 0.25, "maximum": 0.25)", {"0.25", "0.2500"}, {"0.2", "0.251", "0.3", "0"}},
      // Exactly as written, past what a double holds.
      {R"("minimum": 0.1)", {"0.1", "0.10000000000000000001", "1"}, {"0.09999999999999999999", "0.0999999999999999"}},
      {R"("minimum": 1.5e-30)", {"0.0000000000000000000000000000015", "0.1"}, {"0.0000000000000000000000000000014999", "0"}},
      {R"("maximum": 12345678901234567890.5)", {"12345678901234567890.5", "12345678901234567890"}, {"12345678901234567890.50001", "12345678901234567891"}},
  };
  for (const Case& c : cases) {
    const std::string schema = std::string(R"({"type": "number", )") + c.bounds + "}";
    const auto s = compile(schema);
    for (const char* t : c.ok) EXPECT_TRUE(accepts(*s, t)) << schema << " " << t;
    for (const char* t : c.bad) EXPECT_FALSE(accepts(*s, t)) << schema << " " << t;
    // No dead end: every prefix taken, of the texts above and their refused ones, still completes.
    for (const auto* list : {&c.ok, &c.bad}) {
      for (const char* t : *list) {
        SchemaPrefix p(*s);
        for (const char* b = t; *b && p.feed(static_cast<uint8_t>(*b)); ++b) EXPECT_TRUE(completes(p)) << schema << " " << std::string(t, b + 1);
      }
    }
  }
  // Where the refusal comes: at the byte past which nothing is in range.
  const auto max2 = compile(R"({"type": "number", "maximum": 2})");
  EXPECT_EQ(feed_bytes(*max2, "2.0000001").taken, 8u);
  EXPECT_EQ(feed_bytes(*max2, "3").taken, 0u);
  EXPECT_EQ(feed_bytes(*max2, "1e5").taken, 1u);  // no exponent under bounds
  const auto under2 = compile(R"({"type": "number", "exclusiveMaximum": 2})");
  EXPECT_EQ(feed_bytes(*under2, "2").taken, 0u);     // 2, 20..29, 200..: none below 2
  EXPECT_EQ(feed_bytes(*under2, "1.").taken, 2u);
  const auto digits = compile(R"({"type": "number", "minimum": 12.5, "maximum": 130})");
  EXPECT_EQ(feed_bytes(*digits, "12.").taken, 3u);   // 12.5 .. 12.99
  EXPECT_EQ(feed_bytes(*digits, "12.4").taken, 3u);
  EXPECT_EQ(feed_bytes(*digits, "12").taken, 2u);    // 120 may come
  EXPECT_FALSE(accepts(*digits, "12"));
  EXPECT_EQ(feed_bytes(*digits, "131").taken, 2u);
  EXPECT_EQ(feed_bytes(*digits, "0").taken, 0u);
  SchemaPrefix p(*digits);
  ASSERT_TRUE(p.feed(std::string_view("13")));
  EXPECT_TRUE(p.complete());
  EXPECT_TRUE(SchemaPrefix(p).feed(static_cast<uint8_t>('0')));   // 130
  EXPECT_FALSE(SchemaPrefix(p).feed(static_cast<uint8_t>('1')));  // 131
  const auto dash = compile(R"({"type": "number", "minimum": -1})");
  SchemaPrefix q(*dash);
  ASSERT_TRUE(q.feed(static_cast<uint8_t>('-')));
  EXPECT_FALSE(q.complete());  // "-" needs a digit
  EXPECT_FALSE(SchemaPrefix(q).feed(static_cast<uint8_t>('2')));
  ASSERT_TRUE(q.feed(std::string_view("1.")));
  EXPECT_FALSE(q.complete());  // "." needs a digit
  EXPECT_FALSE(SchemaPrefix(q).feed(static_cast<uint8_t>('1')));
  EXPECT_TRUE(q.feed(static_cast<uint8_t>('0')));

  // A bound's text is found by its place in the document (Boost.JSON's double would be 1.5000000000000001e-30
  // and 0.3): through properties with escaped names, anyOf, $ref into $defs; a repeated key's last.
  const auto deep = compile(R"({"type": "object", "properties": {"a/b~c": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/t"}]}},
      "$defs": {"t": {"type": "number", "minimum": 1.5e-30, "maximum": 0.30000000000000000001}}})");
  EXPECT_TRUE(accepts(*deep, R"({"a/b~c":0.0000000000000000000000000000015})"));
  EXPECT_FALSE(accepts(*deep, R"({"a/b~c":0.0000000000000000000000000000014999})"));
  EXPECT_TRUE(accepts(*deep, R"({"a/b~c":0.30000000000000000001})"));
  EXPECT_FALSE(accepts(*deep, R"({"a/b~c":0.300000000000000000011})"));
  EXPECT_TRUE(accepts(*deep, R"({"a/b~c":null})"));
  const auto repeated = compile(R"({"type": "number", "minimum": 1.5e-30, "minimum": 0.5})");
  EXPECT_FALSE(accepts(*repeated, "0.4"));
  EXPECT_TRUE(accepts(*repeated, "0.5"));

  // Huge bounds, exactly: 1e400 and 400 nines.
  const auto big = compile(R"({"type": "number", "minimum": 1e400})");
  EXPECT_TRUE(accepts(*big, "1" + std::string(400, '0')));
  EXPECT_TRUE(accepts(*big, "1" + std::string(400, '0') + ".5"));
  EXPECT_FALSE(accepts(*big, std::string(400, '9')));
  EXPECT_FALSE(accepts(*big, std::string(400, '9') + ".99"));
  EXPECT_TRUE(completes(SchemaPrefix(*big)));
  const auto nines = compile(R"({"type": "number", "maximum": )" + std::string(400, '9') + "}");
  EXPECT_TRUE(accepts(*nines, std::string(400, '9')));
  EXPECT_FALSE(accepts(*nines, std::string(400, '9') + ".1"));
  EXPECT_FALSE(accepts(*nines, "1" + std::string(400, '0')));
  const auto tiny = compile(R"({"type": "number", "exclusiveMinimum": 0, "maximum": 1e-400})");
  EXPECT_TRUE(accepts(*tiny, "0." + std::string(399, '0') + "1"));
  EXPECT_TRUE(accepts(*tiny, "0." + std::string(400, '0') + "5"));
  EXPECT_FALSE(accepts(*tiny, "0." + std::string(399, '0') + "11"));
  EXPECT_TRUE(completes(SchemaPrefix(*tiny)));

  // Other types beside: the bounds bear on numbers only; integers keep their own.
  const auto untyped = compile(R"({"minimum": 0})");
  EXPECT_TRUE(accepts(*untyped, "0.5"));
  EXPECT_TRUE(accepts(*untyped, R"("x")"));
  EXPECT_FALSE(accepts(*untyped, "-1"));
  const auto empty = compile(R"({"type": ["number", "string"], "minimum": 5, "maximum": 4})");
  EXPECT_TRUE(accepts(*empty, R"("a")"));
  EXPECT_EQ(feed_bytes(*empty, "4").taken, 0u);
  const auto either = compile(R"({"anyOf": [{"type": "integer", "minimum": 10, "maximum": 20}, {"type": "number", "minimum": 0, "maximum": 1}]})");
  for (const char* t : {"15", "10", "0.5", "1", "0", "20", "-0", "-0.0"}) EXPECT_TRUE(accepts(*either, t)) << t;  // "-0": the number branch's 0
  for (const char* t : {"5", "15.5", "1.5", "21", "-1"}) EXPECT_FALSE(accepts(*either, t)) << t;
  const auto integer = compile(R"({"type": "integer", "minimum": -0.5, "maximum": 0.5})");
  EXPECT_TRUE(accepts(*integer, "0"));
  EXPECT_FALSE(accepts(*integer, "-0"));  // integers under bounds: no "-0", as before
  EXPECT_FALSE(accepts(*integer, "0.0"));
  // Inside containers the number ends at the container's byte.
  const auto in = compile(R"({"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}})");
  EXPECT_TRUE(accepts(*in, "[0.5, 0,0.999 ]"));
  EXPECT_FALSE(accepts(*in, "[1]"));
  EXPECT_EQ(feed_bytes(*in, "[1]").taken, 1u);
  EXPECT_EQ(feed_bytes(*in, "[0.]").taken, 3u);
  const auto obj = compile(R"({"type": "object", "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["p"]})");
  EXPECT_TRUE(accepts(*obj, R"({"p":0.25})"));
  EXPECT_FALSE(accepts(*obj, R"({"p":1.25})"));
  EXPECT_EQ(feed_bytes(*obj, R"({"p":1.25})").taken, 7u);
  SchemaPrefix r(*obj);
  ASSERT_TRUE(r.feed(std::string_view(R"({"p":1)")));
  EXPECT_TRUE(completes(r));
}

// An exact reading of number texts under bounds, apart from the recognizer: values as integers
// in units of 10^-kScale, and what a prefix may still become as intervals of the value.
namespace oracle {
using i128 = __int128;
constexpr int kScale = 12;
i128 pow10(int n) {
  i128 p = 1;
  while (n-- > 0) p *= 10;
  return p;
}
i128 scaled(std::string_view text) {  // a JSON number with at most kScale fraction digits (exponent included)
  bool neg = false;
  std::size_t i = 0;
  if (text[i] == '-') neg = true, ++i;
  std::string digits;
  int frac = 0, exp = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) digits += text[i];
  if (i < text.size() && text[i] == '.')
    for (++i; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) digits += text[i], ++frac;
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) exp = std::stoi(std::string(text.substr(i + 1)));
  i128 v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  const int shift = kScale - frac + exp;
  v = shift >= 0 ? v * pow10(shift) : v / pow10(-shift);
  return neg ? -v : v;
}
struct Bound {
  i128 v;
  bool lower, exclusive;
};
// One end of an interval of values: none (infinite) or v, open or closed.
struct End {
  bool none = true;
  i128 v = 0;
  bool open = false;
};
// [lo, hi] meets every bound (and holds a multiple of `mult`, where not 0).
bool meets(End lo, End hi, const std::vector<Bound>& bounds, i128 mult = 0) {
  for (const Bound& b : bounds) {
    End& e = b.lower ? lo : hi;
    const bool tighter = e.none || (b.lower ? b.v > e.v : b.v < e.v) || (b.v == e.v && b.exclusive);
    if (tighter) e = {false, b.v, b.exclusive};
  }
  if (lo.none || hi.none) return true;
  if (mult) {  // the least multiple in it, from lo up
    i128 f = lo.v >= 0 ? (lo.v + mult - 1) / mult * mult : -(-lo.v / mult * mult);
    if (lo.open && f == lo.v) f += mult;
    return f < hi.v || (f == hi.v && !hi.open);
  }
  return lo.v < hi.v || (lo.v == hi.v && !lo.open && !hi.open);
}
struct Verdict {
  bool prefix = false;    // some completion is a number within the bounds
  bool complete = false;  // the text itself is one
};
Verdict judge(std::string_view s, const std::vector<Bound>& bounds, i128 mult = 0) {
  Verdict out;
  std::size_t i = 0;
  const bool neg = !s.empty() && s[0] == '-';
  i += neg;
  std::size_t int_end = i;
  while (int_end < s.size() && std::isdigit(static_cast<unsigned char>(s[int_end]))) ++int_end;
  const std::string_view ints = s.substr(i, int_end - i);
  const bool dot = int_end < s.size() && s[int_end] == '.';
  std::size_t frac_end = int_end + dot;
  while (frac_end < s.size() && std::isdigit(static_cast<unsigned char>(s[frac_end]))) ++frac_end;
  if (frac_end != s.size() || (ints.size() > 1 && ints[0] == '0') || (dot && ints.empty())) return out;  // not a number's prefix
  // Reach in magnitudes [a, b), a list of them.
  std::vector<std::pair<i128, std::optional<i128>>> reach;
  const i128 one = pow10(kScale);
  if (ints.empty()) {
    reach.push_back({0, std::nullopt});
  } else if (!dot) {
    const i128 p = scaled(ints);
    if (p == 0) reach.push_back({0, one});
    else
      for (int j = 0; j <= 20; ++j) reach.push_back({p * pow10(j), (p + one) * pow10(j)});
  } else {
    const i128 v = scaled(std::string(s.substr(i)) + (frac_end == int_end + 1 ? "0" : ""));
    reach.push_back({v, v + pow10(kScale - static_cast<int>(frac_end - int_end - 1))});
  }
  for (const auto& [a, b] : reach) {
    End lo, hi;  // of the value: [a, b) or, negated, (-b, -a]
    if (!neg) lo = {false, a, false}, hi = b ? End{false, *b, true} : End{};
    else lo = b ? End{false, -*b, true} : End{}, hi = {false, -a, false};
    out.prefix = out.prefix || meets(lo, hi, bounds, mult);
  }
  if (!ints.empty() && !(dot && frac_end == int_end + 1)) {
    const i128 v = scaled(s);
    out.complete = meets({false, v, false}, {false, v, false}, bounds) && (!mult || v % mult == 0);
  }
  return out;
}
}  // namespace oracle

// Every text of up to 6 bytes over "-.0123456789", under several sets of bounds: the recognizer
// takes exactly the prefixes that the exact reading says can still end within the bounds, is
// complete exactly where the text is within them, and each prefix it takes does complete.
TEST(JsonSchema, NumberBoundsAgainstExactReading) {
  const std::vector<std::vector<std::pair<const char*, const char*>>> sets = {
      {{"minimum", "0"}, {"maximum", "1"}},
      {{"minimum", "-2.5"}, {"maximum", "3.75"}},
      {{"exclusiveMinimum", "0"}},
      {{"exclusiveMaximum", "0"}},
      {{"minimum", "1e-3"}, {"maximum", "1.5E2"}},
      {{"minimum", "-100"}, {"exclusiveMaximum", "-0.5"}},
      {{"exclusiveMinimum", "-1"}, {"exclusiveMaximum", "1"}},
      {{"maximum", "2"}},
      {{"exclusiveMaximum", "2"}},
      {{"minimum", "0"}, {"exclusiveMinimum", "0"}, {"maximum", "10"}, {"exclusiveMaximum", "10.5"}},
      {{"minimum", "0.25"}, {"maximum", "0.25"}},
      {{"exclusiveMinimum", "99.9"}, {"maximum", "100"}},
      {{"minimum", "-0.05"}, {"maximum", "0"}},
      {{"minimum", "12.34"}, {"exclusiveMaximum", "12.35"}},
      {{"minimum", "1000"}},
      {{"maximum", "-7"}},
      {{"exclusiveMinimum", "0.001"}, {"exclusiveMaximum", "0.0011"}},
      {{"minimum", "-30"}, {"maximum", "-20"}},
      {{"minimum", "0.5"}, {"exclusiveMaximum", "1E1"}},
      {{"exclusiveMinimum", "-10"}, {"maximum", "100"}},
  };
  const std::string alphabet = "-.0123456789";
  int64_t prefixes = 0, completes_checked = 0;
  for (const auto& set : sets) {
    std::string schema = R"({"type": "number")";
    std::vector<oracle::Bound> bounds;
    for (const auto& [k, v] : set) {
      schema += std::string(", \"") + k + "\": " + v;
      const std::string_view key(k);
      bounds.push_back({oracle::scaled(v), key == "minimum" || key == "exclusiveMinimum", key.starts_with("exclusive")});
    }
    schema += "}";
    const auto s = compile(schema);
    // Depth first over the texts the reading says go on.
    std::vector<std::pair<std::string, SchemaPrefix>> todo{{"", SchemaPrefix(*s)}};
    while (!todo.empty()) {
      auto [text, state] = std::move(todo.back());
      todo.pop_back();
      for (char c : alphabet) {
        const std::string next = text + c;
        SchemaPrefix p = state;
        const bool took = p.feed(static_cast<uint8_t>(c));
        const oracle::Verdict v = oracle::judge(next, bounds);
        ++prefixes;
        ASSERT_EQ(took, v.prefix) << schema << " " << next;
        if (!took) continue;
        ASSERT_EQ(p.complete(), v.complete) << schema << " " << next;
        if (next.size() <= 4) {
          ASSERT_TRUE(completes(p)) << schema << " " << next;
          ++completes_checked;
        }
        if (next.size() < 6) todo.emplace_back(next, p);
      }
    }
  }
  std::printf("number bounds: %lld texts against the exact reading, %lld taken ones completed\n", static_cast<long long>(prefixes),
              static_cast<long long>(completes_checked));
}

// multipleOf, exhaustively. Integers: every text of up to 4 bytes over "-.0123456789" against
// the multiples themselves, listed (within 10^5, past every prefix's reach of one more digit);
// numbers: every text of up to 5 bytes against the exact reading above, with multiples. Each
// prefix the recognizer takes completes, by a search that backtracks within 256 bytes.
TEST(JsonSchema, MultipleOfAgainstExactReading) {
  auto completes_within = [](const SchemaPrefix& p) {
    std::string found;
    int budget = 20000;
    return dpa::engine::test::completion(p, found, budget);
  };
  struct IntCase {
    const char* schema;
    int64_t m;       // the integers that are multiples of q: those of m
    int64_t lo, hi;  // the bounds, inclusive (the window's ends where none)
    bool neg_zero;   // "-0" is written (neither bounds nor an m past 1)
  };
  constexpr int64_t W = 100000;
  const IntCase int_cases[] = {
      {R"({"type": "integer", "multipleOf": 5})", 5, -W, W, false},
      {R"({"type": "integer", "multipleOf": 5, "minimum": -20, "maximum": 20})", 5, -20, 20, false},
      {R"({"type": "integer", "multipleOf": 3, "minimum": -10, "maximum": 10})", 3, -10, 10, false},
      {R"({"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 100})", 7, 1, 100, false},
      {R"({"type": "integer", "multipleOf": 2.5, "minimum": 0, "maximum": 50})", 5, 0, 50, false},
      {R"({"type": "integer", "multipleOf": 0.5, "minimum": -7, "maximum": 7})", 1, -7, 7, false},
      {R"({"type": "integer", "multipleOf": 0.3, "exclusiveMinimum": 0, "exclusiveMaximum": 30})", 3, 1, 29, false},
      {R"({"type": "integer", "multipleOf": 4, "minimum": -100})", 4, -100, W, false},
      {R"({"type": "integer", "multipleOf": 6, "maximum": 50})", 6, -W, 50, false},
      {R"({"type": "integer", "multipleOf": 0.5})", 1, -W, W, true},
      {R"({"type": "integer", "multipleOf": 1e1, "exclusiveMinimum": 0})", 10, 1, W, false},
      {R"({"type": "integer", "multipleOf": 0.25, "maximum": -3})", 1, -W, -3, false},
  };
  const std::string alphabet = "-.0123456789";
  int64_t texts = 0, completed = 0;
  for (const IntCase& c : int_cases) {
    const auto s = compile(c.schema);
    std::set<std::string> valid, prefixes;
    auto add = [&](const std::string& t) {
      valid.insert(t);
      for (std::size_t n = 1; n <= std::min<std::size_t>(t.size(), 4); ++n) prefixes.insert(t.substr(0, n));
    };
    for (int64_t v = c.lo; v <= c.hi; ++v)
      if (v % c.m == 0) add(std::to_string(v));
    if (c.neg_zero) add("-0");
    std::vector<std::pair<std::string, SchemaPrefix>> todo{{"", SchemaPrefix(*s)}};
    while (!todo.empty()) {
      auto [text, state] = std::move(todo.back());
      todo.pop_back();
      for (char ch : alphabet) {
        const std::string next = text + ch;
        SchemaPrefix p = state;
        const bool took = p.feed(static_cast<uint8_t>(ch));
        ++texts;
        ASSERT_EQ(took, prefixes.count(next) > 0) << c.schema << " " << next;
        if (!took) continue;
        ASSERT_EQ(p.complete(), valid.count(next) > 0) << c.schema << " " << next;
        ASSERT_TRUE(completes_within(p)) << c.schema << " " << next;
        ++completed;
        if (next.size() < 4) todo.emplace_back(next, p);
      }
    }
  }
  struct NumberCase {
    const char* mult;
    std::vector<std::pair<const char*, const char*>> bounds;
  };
  const NumberCase number_cases[] = {
      {"5", {}}, {"3", {}}, {"0.5", {}}, {"0.01", {}}, {"0.25", {}}, {"2.5", {}}, {"1E-1", {}}, {"0.3", {}},
      {"0.5", {{"minimum", "0.2"}, {"maximum", "2.2"}}},
      {"0.01", {{"exclusiveMinimum", "0"}, {"exclusiveMaximum", "1"}}},
      {"0.25", {{"minimum", "-1"}, {"maximum", "-0.3"}}},
      {"1", {{"minimum", "-2.5"}, {"maximum", "7.5"}}},
      {"0.3", {{"minimum", "-1"}, {"maximum", "1"}}},
      {"0.05", {{"minimum", "0.33"}}},
      {"0.125", {{"exclusiveMaximum", "2"}}},
      {"0.5", {{"exclusiveMinimum", "-3"}, {"maximum", "0"}}},
      {"0.25", {{"minimum", "0.25"}, {"maximum", "0.25"}}},
  };
  for (const NumberCase& c : number_cases) {
    std::string schema = std::string(R"({"type": "number", "multipleOf": )") + c.mult;
    std::vector<oracle::Bound> bounds;
    for (const auto& [k, v] : c.bounds) {
      schema += std::string(", \"") + k + "\": " + v;
      const std::string_view key(k);
      bounds.push_back({oracle::scaled(v), key == "minimum" || key == "exclusiveMinimum", key.starts_with("exclusive")});
    }
    schema += "}";
    const auto s = compile(schema);
    const oracle::i128 mult = oracle::scaled(c.mult);
    std::vector<std::pair<std::string, SchemaPrefix>> todo{{"", SchemaPrefix(*s)}};
    while (!todo.empty()) {
      auto [text, state] = std::move(todo.back());
      todo.pop_back();
      for (char ch : alphabet) {
        const std::string next = text + ch;
        SchemaPrefix p = state;
        const bool took = p.feed(static_cast<uint8_t>(ch));
        const oracle::Verdict v = oracle::judge(next, bounds, mult);
        ++texts;
        ASSERT_EQ(took, v.prefix) << schema << " " << next;
        if (!took) continue;
        ASSERT_EQ(p.complete(), v.complete) << schema << " " << next;
        if (next.size() <= 4) {
          ASSERT_TRUE(completes_within(p)) << schema << " " << next;
          ++completed;
        }
        if (next.size() < 5) todo.emplace_back(next, p);
      }
    }
  }
  std::printf("multipleOf: %lld texts against the exact readings, %lld taken ones completed\n", static_cast<long long>(texts),
              static_cast<long long>(completed));
}

TEST(JsonSchema, StringLengths) {
  const auto s = compile(R"({"type": "string", "minLength": 2, "maxLength": 3})");
  EXPECT_FALSE(accepts(*s, R"("a")"));
  EXPECT_TRUE(accepts(*s, R"("ab")"));
  EXPECT_TRUE(accepts(*s, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));  // three code points, nine bytes
  EXPECT_FALSE(accepts(*s, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80!\""));
  EXPECT_TRUE(accepts(*s, R"("\n\u00e9\"")"));    // escapes count one each
  EXPECT_TRUE(accepts(*s, R"("\ud83d\ude00x")"));  // a surrogate pair is one code point
  EXPECT_FALSE(accepts(*s, R"("\ud83d\ude00xyz")"));
  EXPECT_EQ(feed_bytes(*s, R"("abcd")").taken, 4u);
  SchemaPrefix p(*s);
  ASSERT_TRUE(p.feed(std::string_view("\"ab")));
  EXPECT_FALSE(p.in_plain_string());  // maxLength still limits
  EXPECT_EQ(p.plain_room(), 1);       // plain tokens of one character still fit
  ASSERT_TRUE(p.feed(std::string_view("c")));
  EXPECT_EQ(p.plain_room(), 0);
  const auto free = compile(R"({"type": "string", "minLength": 1})");
  SchemaPrefix q(*free);
  ASSERT_TRUE(q.feed(std::string_view("\"")));
  EXPECT_TRUE(q.in_plain_string());
  EXPECT_EQ(q.plain_room(), SchemaPrefix::kNoLimit);
  ASSERT_TRUE(q.feed(std::string_view("\xe2\x82")));
  EXPECT_FALSE(q.in_plain_string());  // inside a character
}

TEST(JsonSchema, EnumsOfMixedTypes) {
  const auto s = compile(R"({"enum": ["red", 1, 12, 1.5, true, null, {"a": [1, 2]}, [], "r\u00e9d"]})");
  for (const char* ok : {"\"red\"", "1", "12", "1.5E0", "true", "null", "{\"a\":[1,2]}", "[]", "\"r\xc3\xa9\x64\""})
    EXPECT_TRUE(accepts(*s, ok)) << ok;
  for (const char* bad : {"\"re\"", "2", "1.5", "false", "{\"a\": [1,2]}", "[ ]", "\"r\\u00e9d\"", " 12 "})
    EXPECT_FALSE(accepts(*s, bad)) << bad;
  const auto typed = compile(R"({"type": "string", "enum": ["a", 1, "b"]})");
  EXPECT_TRUE(accepts(*typed, R"("b")"));
  EXPECT_FALSE(accepts(*typed, "1"));
  const auto both = compile(R"({"enum": ["a", "b"], "const": "b"})");
  EXPECT_FALSE(accepts(*both, R"("a")"));
  EXPECT_TRUE(accepts(*both, R"("b")"));
  SchemaPrefix p(*s);
  ASSERT_TRUE(p.feed(std::string_view("\"r")));
  EXPECT_FALSE(p.in_plain_string());
}

TEST(JsonSchema, AnyOfObjectShapes) {
  const auto s = compile(R"({"anyOf": [
      {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}}, "required": ["kind", "r"], "additionalProperties": false},
      {"type": "object", "properties": {"kind": {"const": "rect"}, "w": {"type": "integer"}, "h": {"type": "integer"}}, "required": ["kind", "w", "h"], "additionalProperties": false},
      {"type": "string", "maxLength": 2}]})");
  EXPECT_TRUE(accepts(*s, R"({"kind":"circle","r":1.5})"));
  EXPECT_TRUE(accepts(*s, R"({"w":2,"kind":"rect","h":3})"));
  EXPECT_TRUE(accepts(*s, R"("ab")"));
  EXPECT_FALSE(accepts(*s, R"({"kind":"circle","w":1})"));
  EXPECT_FALSE(accepts(*s, R"({"r":1,"kind":"rect"})"));
  EXPECT_EQ(feed_bytes(*s, R"({"r":1,"kind":"r)").taken, 15u);  // only "circle" after "r"
  const auto one = compile(R"({"oneOf": [{"type": "integer"}, {"type": "null"}]})");
  EXPECT_TRUE(accepts(*one, "null"));
  EXPECT_TRUE(accepts(*one, "3"));
}

TEST(JsonSchema, RecursiveRef) {
  const auto s = compile(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"], "additionalProperties": false}}})");
  EXPECT_TRUE(accepts(*s, R"({"v":1,"kids":[{"v":2},{"kids":[{"v":4,"kids":[]}],"v":3}]})"));
  EXPECT_FALSE(accepts(*s, R"({"v":1,"kids":[{"kids":[]}]})"));
  // Nesting stops at 64: each node is 2 deep (object, array).
  std::string deep;
  for (int i = 0; i < 31; ++i) deep += "{\"v\":0,\"kids\":[";
  SchemaPrefix p(*s);
  ASSERT_TRUE(p.feed(std::string_view(deep)));  // 62 open
  EXPECT_TRUE(p.feed(std::string_view("{\"v\":0,\"kids\":")));  // 63
  ASSERT_TRUE(p.feed(static_cast<uint8_t>('[')));  // 64: it may be empty only
  EXPECT_FALSE(SchemaPrefix(p).feed(static_cast<uint8_t>('{')));
  EXPECT_TRUE(p.feed(std::string_view("]}")));
  const auto pointer = compile(R"({"definitions": {"a~b/c": {"type": "boolean"}}, "$ref": "#/definitions/a~0b~1c"})");
  EXPECT_TRUE(accepts(*pointer, "true"));
  EXPECT_FALSE(accepts(*pointer, "1"));
  const auto self = compile(R"({"type": "array", "items": {"$ref": "#"}, "maxItems": 2})");
  EXPECT_TRUE(accepts(*self, "[[],[[]]]"));
  const auto all = compile(R"({"allOf": [{"type": "null"}], "description": "x"})");
  EXPECT_TRUE(accepts(*all, "null"));
}

TEST(JsonSchema, Arrays) {
  const auto s = compile(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                             "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3})");
  EXPECT_FALSE(accepts(*s, "[]"));
  EXPECT_TRUE(accepts(*s, R"(["a"])"));
  EXPECT_TRUE(accepts(*s, R"(["a",1,true])"));
  EXPECT_FALSE(accepts(*s, R"(["a",1,true,false])"));
  EXPECT_FALSE(accepts(*s, R"([1])"));
  EXPECT_FALSE(accepts(*s, R"(["a","b"])"));
  EXPECT_EQ(feed_bytes(*s, R"(["a",1,true,)").taken, 11u);
  const auto none = compile(R"({"type": "array", "prefixItems": [{"type": "null"}], "items": false})");
  EXPECT_TRUE(accepts(*none, "[null]"));
  EXPECT_FALSE(accepts(*none, "[null,null]"));
}

TEST(JsonSchema, WhitespaceAndDepth) {
  const auto s = compile(R"({"type": "object"})");
  EXPECT_TRUE(accepts(*s, " \n{ \"a\" : [ 1 , 2 ] }"));
  EXPECT_FALSE(accepts(*s, "{} "));
  const std::string run(SchemaPrefix::kMaxWhitespace, ' ');
  EXPECT_TRUE(accepts(*s, run + "{}"));
  EXPECT_FALSE(accepts(*s, run + " {}"));
  const auto any = compile("true");
  std::string deep(64, '[');
  EXPECT_TRUE(accepts(*any, deep + std::string(64, ']')));
  EXPECT_FALSE(accepts(*any, deep + "[" + std::string(65, ']')));
  EXPECT_TRUE(accepts(*any, "\"x\""));
  EXPECT_TRUE(accepts(*any, "-0.5e3"));
}

// pattern: a search unless anchored; the string's escapes in their canonical form only, the DFA
// reading them as written; the close only where the pattern is matched.
TEST(JsonSchema, Pattern) {
  const auto date = compile(R"({"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"})");
  EXPECT_TRUE(accepts(*date, R"("2024-12-05")"));
  EXPECT_FALSE(accepts(*date, R"("2024-12-5")"));
  EXPECT_EQ(feed_bytes(*date, R"("2024-1x")").taken, 7u);
  SchemaPrefix p(*date);
  ASSERT_TRUE(p.feed(std::string_view("\"2024")));
  EXPECT_EQ(p.plain_room(), -1);  // the DFA decides, token by token
  EXPECT_FALSE(p.feed(static_cast<uint8_t>('"')));
  const auto search = compile(R"({"type": "string", "pattern": "ab"})");
  EXPECT_TRUE(accepts(*search, R"("xxabyy")"));
  EXPECT_TRUE(accepts(*search, R"("ab")"));
  EXPECT_FALSE(accepts(*search, R"("a b")"));
  const auto head = compile(R"({"type": "string", "pattern": "^ab"})");
  EXPECT_TRUE(accepts(*head, R"("abc")"));
  EXPECT_FALSE(accepts(*head, R"("cab")"));
  const auto tail = compile(R"({"type": "string", "pattern": "ab$"})");
  EXPECT_TRUE(accepts(*tail, R"("cab")"));
  EXPECT_FALSE(accepts(*tail, R"("abc")"));
  const auto dollar = compile(R"({"type": "string", "pattern": "^a\\$"})");  // an escaped $ is a literal: a search at the end
  EXPECT_TRUE(accepts(*dollar, R"("a$")"));
  EXPECT_TRUE(accepts(*dollar, R"("a$x")"));
  // Characters JSON escapes: the canonical escape only.
  const auto quote = compile(R"({"type": "string", "pattern": "^a\"[\\n\\x01]\\\\$"})");
  EXPECT_TRUE(accepts(*quote, R"("a\"\n\\")"));
  EXPECT_TRUE(accepts(*quote, R"("a\"\u0001\\")"));
  EXPECT_FALSE(accepts(*quote, R"("a\u0022\n\\")"));
  EXPECT_FALSE(accepts(*quote, R"("a\"\u000a\\")"));
  EXPECT_FALSE(accepts(*quote, R"("a\"\u0001\/")"));
  const auto any = compile(R"({"type": "string", "pattern": "^[^a]{2}$"})");  // code points, not bytes
  EXPECT_TRUE(accepts(*any, "\"\xf0\x9f\x98\x80\xc3\xa9\""));
  EXPECT_TRUE(accepts(*any, R"("\t\"")"));
  EXPECT_FALSE(accepts(*any, R"("\ud83d\ude00x")"));  // a surrogate escape: not the canonical form
  // Beside other types, it bears on strings only.
  const auto mixed = compile(R"({"type": ["string", "integer"], "pattern": "^x+$"})");
  EXPECT_TRUE(accepts(*mixed, "12"));
  EXPECT_TRUE(accepts(*mixed, R"("xx")"));
  EXPECT_FALSE(accepts(*mixed, R"("y")"));
}

// pattern beside minLength / maxLength: both hold, and no string is begun that cannot end under
// both (the DFA is the pattern's and a length counter's product).
TEST(JsonSchema, PatternWithLengths) {
  const auto s = compile(R"({"type": "string", "pattern": "^[a-z]+$", "minLength": 3, "maxLength": 5})");
  EXPECT_FALSE(accepts(*s, R"("ab")"));
  EXPECT_TRUE(accepts(*s, R"("abc")"));
  EXPECT_TRUE(accepts(*s, R"("abcde")"));
  EXPECT_FALSE(accepts(*s, R"("abcdef")"));
  EXPECT_FALSE(accepts(*s, R"("ab1")"));
  EXPECT_EQ(feed_bytes(*s, R"("abcdef")").taken, 6u);  // the sixth letter is refused
  EXPECT_EQ(feed_bytes(*s, R"("ab")").taken, 3u);      // the close is refused before three
  // Code points, escapes one each, under a search pattern.
  const auto e = compile(R"({"type": "string", "pattern": "\"", "maxLength": 2})");
  EXPECT_TRUE(accepts(*e, "\"\\\"\xc3\xa9\""));
  EXPECT_FALSE(accepts(*e, "\"\\\"\xc3\xa9x\""));
  EXPECT_FALSE(accepts(*e, R"("ab")"));
  // A pattern that needs more than maxLength leaves: the other branch of the type list stays.
  const auto mixed = compile(R"({"type": ["string", "integer"], "pattern": "^[ab]{4}$", "maxLength": 3})");
  EXPECT_FALSE(accepts(*mixed, R"("abab")"));
  EXPECT_EQ(feed_bytes(*mixed, R"("a)").taken, 0u);  // no string can begin
  EXPECT_TRUE(accepts(*mixed, "12"));
  // Lengths that only some paths of the pattern can meet: (ab)* has even lengths only.
  const auto even = compile(R"({"type": "string", "pattern": "^(ab)*$", "minLength": 3, "maxLength": 5})");
  EXPECT_TRUE(accepts(*even, R"("abab")"));
  EXPECT_FALSE(accepts(*even, R"("ab")"));
  EXPECT_FALSE(accepts(*even, R"("ababab")"));
  EXPECT_EQ(feed_bytes(*even, R"("ababa")").taken, 5u);  // "ababa would need a sixth character
}

// multipleOf: on integers by value modulo (bounds rounded in to multiples), on numbers as exact
// decimals (no exponent); a digit only where some completion is a multiple within the bounds.
TEST(JsonSchema, MultipleOf) {
  // (A search that backtracks within 256 bytes: "2" under 2.5 may grow 9s for ever.)
  auto no_dead_end = [](const JsonSchema& s, std::string_view text) {
    SchemaPrefix p(s);
    for (std::size_t i = 0; i < text.size() && p.feed(static_cast<uint8_t>(text[i])); ++i) {
      std::string found;
      int budget = 20000;
      if (!dpa::engine::test::completion(p, found, budget)) return std::string(text.substr(0, i + 1));
    }
    return std::string();
  };
  struct Case {
    const char* schema;
    std::vector<const char*> ok;
    std::vector<std::pair<const char*, std::size_t>> bad;  // text, bytes taken
  };
  const Case cases[] = {
      {R"({"type": "integer", "multipleOf": 5})", {"0", "5", "-5", "100", "1000000005", "-9223372036854775805"},
       {{"3", 1}, {"-0", 1}, {"5.0", 1}, {"1e1", 1}, {"9223372036854775807", 18}}},
      {R"({"type": "integer", "multipleOf": 3, "minimum": -10, "maximum": 10})", {"0", "3", "-9", "9", "6"},
       {{"1", 0}, {"-1", 1}, {"12", 0}, {"-12", 1}, {"4", 0}}},
      {R"({"type": "integer", "multipleOf": 0.5})", {"7", "-0", "-3", "0"}, {{"7.5", 1}}},
      {R"({"type": "integer", "multipleOf": 2.5, "maximum": 12})", {"10", "-5", "0", "5"}, {{"12", 1}, {"15", 1}, {"2", 0}}},
      {R"({"type": "integer", "multipleOf": 5, "minimum": -3, "maximum": 3})", {"0"}, {{"-5", 0}, {"5", 0}}},
      {R"({"type": "integer", "multipleOf": 1e1, "exclusiveMinimum": 0})", {"10", "20", "1000"}, {{"0", 0}, {"15", 2}, {"-10", 0}}},
      {R"({"type": "number", "multipleOf": 0.01})", {"0", "1", "1.5", "1.25", "-3.07", "10.10", "0.010", "-0", "-0.0"},
       {{"1.255", 4}, {"0.0010", 4}, {"1e2", 1}, {"1.2E1", 3}, {"0.001", 4}}},
      {R"({"type": "number", "multipleOf": 0.25})", {"0.25", "0.5", "0.75", "1", "1.0", "2.250", "-0.75"},
       {{"0.3", 2}, {"0.26", 3}, {"1.1", 2}}},
      {R"({"type": "number", "multipleOf": 2.5})", {"2.5", "5", "7.5", "-2.5", "10.0", "0", "12.50"},
       {{"2.6", 2}, {"2.55", 3}, {"3.5", 1}}},
      {R"({"type": "number", "multipleOf": 3})", {"3", "6.0", "-9", "0", "12.000"}, {{"1.5", 1}, {"3.1", 2}}},
      {R"({"type": "number", "multipleOf": 0.3})", {"0.3", "0.6", "0.9", "1.2", "-1.5"}, {{"0.1", 2}, {"0.35", 3}}},
      {R"({"type": "number", "multipleOf": 5e-1, "minimum": 0.2, "maximum": 2.2})", {"0.5", "1", "2", "1.50", "2.0"},
       {{"0.2", 2}, {"2.5", 2}, {"0", 1}, {"2.2", 2}, {"3", 0}}},
      {R"({"type": "number", "multipleOf": 0.01, "exclusiveMinimum": 0, "exclusiveMaximum": 1})", {"0.01", "0.99", "0.5"},
       {{"0.001", 3}, {"0.995", 4}, {"1", 0}, {"-0.01", 0}}},
      {R"({"type": "number", "multipleOf": 0.25, "minimum": -1, "maximum": -0.3})", {"-1", "-0.75", "-0.5", "-0.50"},
       {{"-0.25", 3}, {"0", 0}, {"-0.3", 3}}},
      {R"({"type": "array", "items": {"type": "number", "multipleOf": 0.5}})", {"[1.5,2]", "[1.5 ,1, -0.5]"}, {{"[1.2]", 3}, {"[1,1e1]", 4}}},
      // uniqueItems over integers under multipleOf: the multiples counted.
      {R"({"type": "array", "items": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 20}, "uniqueItems": true, "minItems": 5})",
       {"[0,5,10,15,20]", "[20,15,10,5,0]"}, {{"[0,5,10,15,20,", 13}, {"[10,15,1", 7}, {"[0,5,10,15]", 10}}},
  };
  for (const Case& c : cases) {
    const auto s = compile(c.schema);
    for (const char* t : c.ok) {
      EXPECT_TRUE(accepts(*s, t)) << c.schema << " " << t << " taken " << feed_bytes(*s, t).taken;
      EXPECT_EQ(no_dead_end(*s, t), "") << c.schema << " " << t;
    }
    for (const auto& [t, taken] : c.bad) {
      EXPECT_FALSE(accepts(*s, t)) << c.schema << " " << t;
      EXPECT_EQ(feed_bytes(*s, t).taken, taken) << c.schema << " " << t;
      EXPECT_EQ(no_dead_end(*s, t), "") << c.schema << " " << t;
    }
  }
  // Texts the bounds and the multiples meet on, one by one.
  const auto ints = compile(R"({"type": "integer", "multipleOf": 3, "minimum": -10, "maximum": 10})");
  for (int v = -40; v <= 40; ++v) EXPECT_EQ(accepts(*ints, std::to_string(v)), v % 3 == 0 && v >= -10 && v <= 10) << v;
  const auto five = compile(R"({"type": "integer", "multipleOf": 5})");
  for (int v = -300; v <= 300; ++v) EXPECT_EQ(accepts(*five, std::to_string(v)), v % 5 == 0) << v;
  SchemaPrefix p(*five);
  ASSERT_TRUE(p.feed(std::string_view("13")));  // 130, 135
  EXPECT_FALSE(p.complete());
  EXPECT_TRUE(completes(p));
  const auto quarters = compile(R"({"type": "number", "multipleOf": 0.25})");
  for (int i = -200; i <= 200; ++i) {  // i/100: a multiple of 0.25 where i is one of 25
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%d.%02d", i < 0 ? "-" : "", std::abs(i) / 100, std::abs(i) % 100);
    EXPECT_EQ(accepts(*quarters, buf), i % 25 == 0) << buf;
  }
}

// uniqueItems: no two items equal as JSON values (numbers by value, strings by code points),
// refused at the byte that would make a duplicate or leave no value unused; no dead ends.
TEST(JsonSchema, UniqueItems) {
  // Every prefix the recognizer takes of these texts still completes.
  auto no_dead_end = [](const JsonSchema& s, std::string_view text) {
    SchemaPrefix p(s);
    for (std::size_t i = 0; i < text.size() && p.feed(static_cast<uint8_t>(text[i])); ++i)
      if (!completes(p)) return std::string(text.substr(0, i + 1));
    return std::string();
  };
  struct Case {
    const char* schema;
    std::vector<const char*> ok;
    std::vector<std::pair<const char*, std::size_t>> bad;  // text, bytes taken
  };
  const Case cases[] = {
      {R"({"type": "array", "items": {"type": "string"}, "uniqueItems": true})",
       {R"([])", R"(["a"])", R"(["a","b"])", R"(["ab","a",""])", R"(["a","A"])", R"(["\u00e9","e"])"},
       {{R"(["a","a"])", 7}, {R"(["a","\u0061"])", 12}, {"[\"\\u00e9\",\"\xc3\xa9\"]", 13}, {R"([ "a" , "a" ])", 10},
        {"[\"\\ud83d\\ude00\",\"\xf0\x9f\x98\x80\"]", 21}, {R"(["\/","/"])", 8}, {R"(["","a",""])", 9},
        {"[\"\\n\",\"\\u000a\"]", 13}}},
      {R"({"type": "array", "items": {"type": "integer"}, "uniqueItems": true})",
       {"[1,2,3]", "[1,10]", "[-1,1]", "[0]", "[-0]", "[ 7 , 70 ]"},
       {{"[1,1]", 4}, {"[1, 1 ]", 5}, {"[0,-0]", 4}, {"[-0,0]", 4}, {"[12,12]", 6}}},
      {R"({"type": "array", "items": {"type": "number"}, "uniqueItems": true})",
       {"[1,1.5]", "[0.5,0.05]", "[1,10,100,1e3]", "[1e1,1e-1]", "[-1,1]"},
       {{"[1,1.0]", 6}, {"[1,1e0]", 6}, {"[100,1e2]", 8}, {"[0.5,5e-1]", 9}, {"[0.5,50E-2]", 10}, {"[1.5,1.50]", 9},
        {"[0,0.0]", 6}, {"[0,-0.0]", 7}, {"[0,0e5]", 4}, {"[0,0.00E", 7}, {"[10,1E+1]", 8}, {"[1,0.1e1]", 8}}},
      {R"({"type": "array", "items": {"enum": ["a", "b", "c"], "type": "string"}, "uniqueItems": true})",
       {R"(["a","b","c"])", R"(["c","a"])", "[]"},
       {{R"(["a","b","c",)", 12}, {R"(["a","a"])", 6}, {R"(["b","x"])", 6}}},
      {R"({"type": "array", "items": {"type": "boolean"}, "uniqueItems": true, "minItems": 2})",
       {"[true,false]", "[false,true]"},
       {{"[true,true]", 6}, {"[true,false,", 11}, {"[true]", 5}}},
      {R"({"type": "array", "items": {"type": ["null", "boolean"]}, "uniqueItems": true})",
       {"[null,true,false]", "[true,null]"},
       {{"[null,null]", 6}, {"[null,true,false,", 16}}},
      // 1 as an enum value and as a bounded integer is one value.
      {R"({"type": "array", "items": {"anyOf": [{"enum": [1, 2]}, {"type": "integer", "minimum": 1, "maximum": 3}]}, "uniqueItems": true})",
       {"[1,2,3]", "[3,2,1]"},
       {{"[1,2,3,", 6}, {"[2,2]", 3}}},
      {R"({"type": "array", "items": {"type": "integer", "minimum": 10, "maximum": 12}, "uniqueItems": true})",
       {"[10,11,12]", "[12,10]"},
       {{"[10,11,12,", 9}, {"[10,10]", 5}, {"[10,12,11,", 9}}},
      // A prefix that can only become used values is refused: "1" under 1..19 once 1 and 10..19 are in.
      {R"({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 19}, "uniqueItems": true})",
       {"[1,10,11,12,13,14,15,16,17,18,19,2]"},
       {{"[1,10,11,12,13,14,15,16,17,18,19,1", 33}, {"[19,1,18,10,11,12,13,14,15,16,17,1", 33}}},
      {R"({"type": "array", "items": {"type": "integer", "minimum": -3, "maximum": -1}, "uniqueItems": true})",
       {"[-1,-2,-3]"},
       {{"[-1,-2,-3,", 9}, {"[-1,-1]", 5}}},
      // A string of at most one character: its last character counted out.
      {R"({"type": "array", "items": {"type": "string", "maxLength": 1}, "uniqueItems": true})",
       {R"(["a","b"])", R"(["","a"])", R"(["\u0041","B"])"},
       {{R"(["a","a"])", 6}, {R"(["A","\u0041"])", 11}, {"[\"\xc3\xa9\",\"\xc3\xa9\"]", 8},
        {R"(["@","A","B","C","D","E","F","G","H","I","J","K","L","M","N","O","\u004)", 70}}},
      {R"({"type": "array", "items": {"type": "string", "maxLength": 0}, "uniqueItems": true})",
       {R"([""])", "[]"},
       {{R"(["",)", 3}}},
      // Numbers under bounds: a range of one value, and prefixes that reach the greatest only.
      {R"({"type": "array", "items": {"type": "number", "minimum": 0.25, "maximum": 0.25}, "uniqueItems": true})",
       {"[0.25]", "[0.250]"},
       {{"[0.25,", 5}}},
      {R"({"type": "array", "items": {"type": "number", "minimum": -1, "maximum": 1}, "uniqueItems": true})",
       {"[1,0.5,-1,0,-0.5]", "[0.5,0.50001]"},
       {{"[1,1.0]", 3}, {"[1,1.]", 3}, {"[-1,-1]", 5}, {"[0,-0]", 5}, {"[1,0.3,0.30]", 11}}},
      {R"({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 5}, "uniqueItems": true})",
       {"[0,5,2.5]", "[-0,1]"},
       {{"[0,-0]", 3}, {"[-0.0,0]", 7}, {"[5,5.0]", 3}}},
  };
  for (const Case& c : cases) {
    const auto s = compile(c.schema);
    for (const char* t : c.ok) {
      EXPECT_TRUE(accepts(*s, t)) << c.schema << " " << t << " taken " << feed_bytes(*s, t).taken;
      EXPECT_EQ(no_dead_end(*s, t), "") << c.schema << " " << t;
    }
    for (const auto& [t, taken] : c.bad) {
      EXPECT_FALSE(accepts(*s, t)) << c.schema << " " << t;
      EXPECT_EQ(feed_bytes(*s, t).taken, taken) << c.schema << " " << t;
      EXPECT_EQ(no_dead_end(*s, t), "") << c.schema << " " << t;
    }
  }

  // At most kMaxUniqueItems items: then the array must close.
  const auto strings = compile(R"({"type": "array", "items": {"type": "string"}, "uniqueItems": true})");
  std::string many = "[";
  for (int i = 0; i < SchemaPrefix::kMaxUniqueItems; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  EXPECT_TRUE(accepts(*strings, many + "]"));
  EXPECT_EQ(feed_bytes(*strings, many + ",").taken, many.size());
  // The token trie's plain-token set: unbounded strings take any run; under maxLength each token is walked.
  SchemaPrefix open(*strings);
  ASSERT_TRUE(open.feed(std::string_view(R"(["a",")")));
  EXPECT_EQ(open.plain_room(), SchemaPrefix::kNoLimit);
  const auto short_strings = compile(R"({"type": "array", "items": {"type": "string", "maxLength": 3}, "uniqueItems": true})");
  SchemaPrefix bounded(*short_strings);
  ASSERT_TRUE(bounded.feed(std::string_view(R"(["abc",")")));
  EXPECT_EQ(bounded.plain_room(), -1);
  ASSERT_TRUE(bounded.feed(std::string_view("ab")));
  EXPECT_FALSE(SchemaPrefix(bounded).feed(static_cast<uint8_t>('c')));
  EXPECT_TRUE(SchemaPrefix(bounded).feed(static_cast<uint8_t>('d')));

  // Sets inside other containers, and arrays of sets (the outer one not unique).
  const auto nested = compile(R"({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
      "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true}}}})");
  EXPECT_TRUE(accepts(*nested, R"({"tags":["a","b"],"grid":[[1,2],[1,2],[]]})"));
  EXPECT_FALSE(accepts(*nested, R"({"tags":["a","a"]})"));
  EXPECT_FALSE(accepts(*nested, R"({"grid":[[1,2],[2,2]]})"));
  EXPECT_TRUE(accepts(*nested, R"({"tags":["a"],"tags2":["a","a"]})"));  // undeclared: any value
  // A type list with the array one: the set and the other types.
  const auto optional = compile(R"({"type": ["array", "null"], "items": {"type": "string"}, "uniqueItems": true})");
  EXPECT_TRUE(accepts(*optional, "null"));
  EXPECT_TRUE(accepts(*optional, R"(["x","y"])"));
  EXPECT_FALSE(accepts(*optional, R"(["x","x"])"));
  // minItems that the distinct values just meet: every item is forced in the end.
  const auto all3 = compile(R"({"type": "array", "items": {"enum": ["x", "y", "z"]}, "uniqueItems": true, "minItems": 3})");
  EXPECT_TRUE(accepts(*all3, R"(["z","x","y"])"));
  EXPECT_EQ(feed_bytes(*all3, R"(["z","x"])").taken, 8u);
  // prefixItems whose items each have many values.
  const auto tuple = compile(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}], "items": {"type": "integer"}, "uniqueItems": true})");
  EXPECT_TRUE(accepts(*tuple, R"(["a","b",1,2])"));
  EXPECT_FALSE(accepts(*tuple, R"(["a","a"])"));
  EXPECT_FALSE(accepts(*tuple, R"(["a","b",1,1])"));
  // uniqueItems false, or with at most one item, asserts nothing.
  EXPECT_TRUE(accepts(*compile(R"({"type": "array", "items": {"type": "integer"}, "uniqueItems": false})"), "[1,1]"));
  EXPECT_TRUE(accepts(*compile(R"({"type": "array", "maxItems": 1, "uniqueItems": true})"), R"([{"a":[]}])"));
  EXPECT_TRUE(accepts(*compile(R"({"$ref": "#/$defs/a", "uniqueItems": false, "$defs": {"a": {"type": "array"}}})"), "[1,1]"));
}

TEST(JsonSchema, CompileErrors) {
  auto error = [](std::string_view text) {
    try {
      JsonSchema::compile(text);
    } catch (const dpa::Error& e) {
      return std::string(e.what());
    }
    return std::string("(compiled)");
  };
  auto has = [](const std::string& msg, std::string_view part) { return msg.find(part) != std::string::npos; };
  EXPECT_TRUE(has(error("{\"type\": "), "not valid JSON"));
  EXPECT_TRUE(has(error("[1]"), "must be an object or a boolean"));
  EXPECT_EQ(error(R"({"properties": {"a": {"type": "string", "pattern": "x"}}})"), "(compiled)");
  EXPECT_TRUE(has(error(R"js({"properties": {"a": {"type": "string", "pattern": "(?=x)"}}})js"), "#/properties/a/pattern"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "(a"})"), "'pattern' (a"));
  EXPECT_EQ(error(R"({"type": "string", "pattern": "a", "maxLength": 3, "minLength": 1})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "a", "maxLength": 1001})"),
                  "minLength and maxLength beside a 'pattern' or 'format' are supported up to 1000"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "^[ab]{10}$", "maxLength": 5})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": 5})"), "'pattern' must be a string"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "^[^\\s\\S]$"})"), "matches no text"));
  std::string patterns = R"({"type": "object", "properties": {)";
  for (int i = 0; i < 17; ++i) patterns += (i ? "," : "") + std::string("\"p") + std::to_string(i) + R"(": {"type": "string", "pattern": "a)" + std::to_string(i) + "\"}";
  EXPECT_TRUE(has(error(patterns + "}}"), "more than 16 distinct patterns"));
  EXPECT_EQ(error(R"({"type": "object", "properties": {"a": {"pattern": "^x$"}, "b": {"pattern": "^x$"}, "c": {"type": "string", "pattern": "^x$"}}})"),
            "(compiled)");  // one pattern, compiled once
  for (const char* k : {"patternProperties", "minProperties", "if", "not", "contains", "dependentRequired"})
    EXPECT_TRUE(has(error(std::string("{\"") + k + "\": {}}"), std::string("'") + k + "'")) << k;
  EXPECT_TRUE(has(error(R"({"$ref": "https://example.com/s.json"})"), "$ref"));
  // multipleOf: a number above 0, its digits below 2^31; above 1 not beside bounds on numbers.
  for (const char* q : {"0", "-1", "\"5\"", "{}", "-0.5", "true"})
    EXPECT_TRUE(has(error(std::string(R"({"type": "number", "multipleOf": )") + q + "}"), "'multipleOf' must be a number greater than 0 (at #/multipleOf)")) << q;
  EXPECT_TRUE(has(error(R"({"properties": {"n": {"type": "integer", "multipleOf": 12345678901}}})"), "'multipleOf' is supported where its digits"));
  EXPECT_TRUE(has(error(R"({"properties": {"n": {"type": "integer", "multipleOf": 12345678901}}})"), "(at #/properties/n/multipleOf)"));
  EXPECT_TRUE(has(error(R"({"type": "number", "multipleOf": 0.000123456789012})"), "'multipleOf' is supported where its digits"));
  EXPECT_TRUE(has(error(R"({"type": "number", "multipleOf": 1e-20000})"), "'multipleOf' must be from 1e-10000"));
  EXPECT_EQ(error(R"({"type": "number", "multipleOf": 2147483647e-10000})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"type": "number", "multipleOf": 5, "minimum": 0})"),
                  "'multipleOf' above 1 beside minimum / maximum on numbers is not supported (on integers it is) (at #/multipleOf)"));
  EXPECT_EQ(error(R"({"type": "number", "multipleOf": 1, "minimum": 0})"), "(compiled)");
  EXPECT_EQ(error(R"({"type": "integer", "multipleOf": 5, "minimum": 0})"), "(compiled)");
  EXPECT_EQ(error(R"({"type": "string", "multipleOf": 5})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 6})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "number", "multipleOf": 0.5, "minimum": 0.6, "maximum": 0.9})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "number", "multipleOf": 0.5, "exclusiveMinimum": 0.5, "exclusiveMaximum": 1})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "number", "multipleOf": 0.5}, "uniqueItems": true})"),
                  "'uniqueItems' on numbers under 'multipleOf' is not supported"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 20}, "uniqueItems": true, "minItems": 6})"),
                  "admits no value"));
  // uniqueItems: scalar items only; named with its pointer where refused.
  EXPECT_TRUE(has(error(R"({"uniqueItems": {}})"), "'uniqueItems' must be a boolean (at #/uniqueItems)"));
  EXPECT_TRUE(has(error(R"({"type": "array", "uniqueItems": true})"), "may be objects or arrays (at #/uniqueItems)"));
  EXPECT_TRUE(has(error(R"({"properties": {"t": {"type": "array", "items": {"type": "object"}, "uniqueItems": true}}})"),
                  "(at #/properties/t/uniqueItems)"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "array"}]}, "uniqueItems": true})"),
                  "'uniqueItems'"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"enum": ["a", [1]]}, "uniqueItems": true})"), "an enum/const item here is an object or array"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "string", "pattern": "^a+$"}, "uniqueItems": true})"), "'pattern'"));
  EXPECT_TRUE(has(error(R"({"type": "array", "prefixItems": [{"type": "boolean"}], "items": {"type": "string"}, "uniqueItems": true})"),
                  "'uniqueItems' beside 'prefixItems'"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "string"}, "uniqueItems": true, "minItems": 65})"),
                  "'uniqueItems' with a minItems above 64 is not supported (at #/uniqueItems)"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "boolean"}, "uniqueItems": true, "minItems": 3})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"enum": [1, 1.0, 1e0]}, "uniqueItems": true, "minItems": 2})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 5}, "uniqueItems": true, "minItems": 6})"),
                  "admits no value"));
  EXPECT_EQ(error(R"({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 5}, "uniqueItems": true, "minItems": 5})"), "(compiled)");
  EXPECT_EQ(error(R"({"type": ["array", "string"], "items": {"type": "boolean"}, "uniqueItems": true, "minItems": 3})"), "(compiled)");
  EXPECT_EQ(error(R"({"type": "array", "items": {"enum": ["a", "b"], "type": "string"}, "uniqueItems": true})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"enum": [[1]], "uniqueItems": true})"), "'enum' together with 'uniqueItems'"));
  EXPECT_TRUE(has(error(R"({"$ref": "#/$defs/missing"})"), "points to nothing"));
  EXPECT_TRUE(has(error(R"({"$ref": "#"})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"enum": []})"), "admits no value"));
  EXPECT_TRUE(has(error("false"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "array", "minItems": 3, "maxItems": 2})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "object", "required": ["a"], "additionalProperties": false})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]})"), "admits no value"));
  EXPECT_EQ(error(R"({"type": "number", "minimum": 0})"), "(compiled)");
  EXPECT_EQ(error(R"({"minimum": 0, "maximum": 1e400})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"type": "integer", "exclusiveMinimum": true})"), "exclusiveMinimum"));
  EXPECT_TRUE(has(error(R"({"type": "number", "exclusiveMinimum": true})"), "must be a number (at #/exclusiveMinimum)"));
  EXPECT_TRUE(has(error(R"({"properties": {"a": {"type": "number", "maximum": "1"}}})"), "must be a number (at #/properties/a/maximum)"));
  EXPECT_TRUE(has(error(R"({"type": "number", "maximum": 1e20000})"), "(at #/maximum)"));
  EXPECT_TRUE(has(error(R"({"type": "number", "minimum": -1e-10001})"), "(at #/minimum)"));
  EXPECT_EQ(error(R"({"type": "number", "exclusiveMinimum": 1e-10000, "maximum": 9.99e9999})"), "(compiled)");
  EXPECT_TRUE(has(error(R"({"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "number", "minimum": 2.5, "maximum": 2.4999})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "strin"})"), "'type'"));
  EXPECT_TRUE(has(error(R"({"allOf": [{}, {}]})"), "allOf"));
  EXPECT_TRUE(has(error(R"({"anyOf": [{}], "type": "string"})"), "'anyOf' together with 'type'"));
  EXPECT_TRUE(has(error(R"({"enum": ["a"], "maxLength": 1})"), "'enum' together with 'maxLength'"));
  EXPECT_TRUE(has(error(R"({"items": [{}]})"), "prefixItems"));
  std::string big = "{\"description\": \"" + std::string(70000, 'x') + "\"}";
  EXPECT_TRUE(has(error(big), "64 KiB"));
  std::string many = "{\"anyOf\": [";
  for (int i = 0; i < 5000; ++i) many += std::string(i ? "," : "") + "{}";
  EXPECT_TRUE(has(error(many + "]}"), "4096"));
  EXPECT_EQ(error(R"({"title": "t", "description": "d", "default": 1, "examples": [], "$schema": "x", "$id": "y",
                     "$comment": "c", "deprecated": false, "readOnly": true, "writeOnly": false, "format": "date", "type": "string"})"),
            "(compiled)");
}

// ---------------------------------------------------------------------------------------------
// The token trie.

TEST(JsonSchemaTokenTrie, AllowedIsWhatEachTokenAloneWouldFeed) {
  Rng rng(9);
  const std::string alphabet = "{}[]\",: \n-.0159eEtrufalsnxkid\\u\xc3\xa9\xe2\x82\xac";
  std::vector<std::string> vocab;
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    const std::size_t n = rng() % 6;
    for (std::size_t k = 0; k < n; ++k) t += alphabet[rng() % alphabet.size()];
    vocab.push_back(t);
  }
  for (const char* t : {"name", "kind", "\":\"", "ab", " text", "\xc3\xa9t\xc3\xa9", "\xe2\x82"}) vocab.push_back(t);
  const TokenTrie trie(vocab);
  const std::string schema = R"({"type": "object", "properties": {
      "name": {"type": "string"}, "kind": {"enum": ["a", "ab", 12]}, "n": {"type": "integer", "minimum": -5, "maximum": 150},
      "code": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 4},
      "list": {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "object", "properties": {"id": {"type": "integer"}}}]}}},
      "required": ["name"]})";
  const auto s = compile(schema);
  const std::string docs[] = {
      R"({"name":"x\u00e9 text \ud83d\ude00 \u20ac","kind":"ab","n":-5,"code":"kid","list":["ab",{"id":1,"z":[true]}]})",
      R"({ "list" : [ ] , "code" : "nxuk" , "n" : 150 , "kind" : 12 , "name" : "" })",
  };
  std::vector<uint32_t> allowed;
  int64_t total = 0, plain_states = 0;
  for (const std::string& doc : docs) {
    ASSERT_TRUE(accepts(*s, doc)) << doc;
    for (std::size_t cut = 0; cut <= doc.size(); ++cut) {
      SchemaPrefix state(*s);
      ASSERT_TRUE(state.feed(std::string_view(doc).substr(0, cut)));
      plain_states += state.in_plain_string();
      trie.allowed(state, allowed);
      ASSERT_EQ(static_cast<int64_t>(allowed.size()), trie.mask_words());
      for (std::size_t id = vocab.size(); id < allowed.size() * 32; ++id) ASSERT_FALSE(mask_allows(allowed, id));
      for (std::size_t id = 0; id < vocab.size(); ++id) {
        SchemaPrefix alone = state;
        const bool want = !vocab[id].empty() && alone.feed(vocab[id]);
        ASSERT_EQ(mask_allows(allowed, id), want) << "prefix " << cut << " of " << doc << ", token '" << vocab[id] << "'";
        total += want;
      }
    }
  }
  EXPECT_GT(plain_states, 10);
  EXPECT_GT(total, 10000);
}


// Inside the items of uniqueItems arrays: a string under maxLength is walked token by token (a
// token that fills it may make a used value), an unbounded one takes the plain-token set.
TEST(JsonSchemaTokenTrie, UniqueItemsMasks) {
  Rng rng(11);
  const std::string alphabet = "[]\",: abcx1029\\u\xc3\xa9";
  std::vector<std::string> vocab;
  for (int i = 0; i < 3000; ++i) {
    std::string t;
    const std::size_t n = rng() % 5;
    for (std::size_t k = 0; k < n; ++k) t += alphabet[rng() % alphabet.size()];
    vocab.push_back(t);
  }
  for (const char* t : {"ab", "abc", "a", "\"a", "\",\"", "10", "\xc3\xa9"}) vocab.push_back(t);
  const TokenTrie trie(vocab);
  const auto s = compile(R"({"type": "object", "properties": {
      "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "uniqueItems": true},
      "ids": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 20}, "uniqueItems": true},
      "u": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}})");
  const std::string docs[] = {
      R"({"tags":["ab","a","abc","b","abx"],"ids":[1,10,2,0,20,19],"u":["x","x\u00e9",")" "\xc3\xa9" R"(",""]})",
      R"({ "u" : [ "abc" , "ab" ] , "tags" : [ "\u0061" , "c" ] })",
  };
  std::vector<uint32_t> allowed;
  int64_t total = 0;
  for (const std::string& doc : docs) {
    ASSERT_TRUE(accepts(*s, doc)) << doc;
    for (std::size_t cut = 0; cut <= doc.size(); ++cut) {
      SchemaPrefix state(*s);
      ASSERT_TRUE(state.feed(std::string_view(doc).substr(0, cut)));
      trie.allowed(state, allowed);
      for (std::size_t id = 0; id < vocab.size(); ++id) {
        SchemaPrefix alone = state;
        const bool want = !vocab[id].empty() && alone.feed(vocab[id]);
        ASSERT_EQ(mask_allows(allowed, id), want) << "prefix " << cut << " of " << doc << ", token '" << vocab[id] << "'";
        total += want;
      }
    }
  }
  EXPECT_GT(total, 5000);
}


// ---------------------------------------------------------------------------------------------
// `format`: each asserted name against references written plainly here (a calendar with its
// leap-year rule, numbers parsed, hex positions counted), not against the module's regexes.

bool digits(std::string_view s, std::size_t at, std::size_t n, int& v) {
  if (at + n > s.size()) return false;
  v = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  return true;
}
bool ref_date(std::string_view s) {  // YYYY-MM-DD, a day of the Gregorian calendar, year 1-9999
  int y, m, d;
  if (s.size() != 10 || s[4] != '-' || s[7] != '-' || !digits(s, 0, 4, y) || !digits(s, 5, 2, m) || !digits(s, 8, 2, d))
    return false;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return y >= 1 && m >= 1 && m <= 12 && d >= 1 && d <= days[m - 1] + (m == 2 && leap);
}
bool ref_time(std::string_view s) {  // HH:MM:SS[.f{1,6}](Z|±HH:MM)
  int h, m, sec;
  if (s.size() < 9 || s[2] != ':' || s[5] != ':' || !digits(s, 0, 2, h) || !digits(s, 3, 2, m) || !digits(s, 6, 2, sec))
    return false;
  if (h > 23 || m > 59 || sec > 59) return false;
  std::size_t i = 8;
  if (i < s.size() && s[i] == '.') {
    std::size_t n = 0;
    while (i + 1 + n < s.size() && s[i + 1 + n] >= '0' && s[i + 1 + n] <= '9') ++n;
    if (n < 1 || n > 6) return false;
    i += 1 + n;
  }
  const std::string_view off = s.substr(i);
  if (off == "Z") return true;
  int oh, om;
  return off.size() == 6 && (off[0] == '+' || off[0] == '-') && off[3] == ':' && digits(off, 1, 2, oh) &&
         digits(off, 4, 2, om) && oh <= 23 && om <= 59;
}
bool ref_date_time(std::string_view s) { return s.size() > 11 && s[10] == 'T' && ref_date(s.substr(0, 10)) && ref_time(s.substr(11)); }
bool ref_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}
std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep) out.emplace_back();
    else out.back() += c;
  }
  return out;
}
bool ref_ipv4(std::string_view s) {
  const auto parts = split(s, '.');
  if (parts.size() != 4) return false;
  for (const auto& p : parts) {
    if (p.empty() || p.size() > 3 || (p.size() > 1 && p[0] == '0')) return false;
    int v;
    if (!digits(p, 0, p.size(), v) || v > 255) return false;
  }
  return true;
}
bool ref_ipv6(std::string_view s) {
  const std::size_t dc = s.find("::");
  if (dc != std::string_view::npos && s.find("::", dc + 1) != std::string_view::npos) return false;
  auto groups = [](std::string_view part, bool last, int& n) {  // "a:b:c" or "", the last may be IPv4
    if (part.empty()) return true;
    const auto g = split(part, ':');
    for (std::size_t i = 0; i < g.size(); ++i) {
      if (last && i + 1 == g.size() && g[i].find('.') != std::string::npos) {
        if (!ref_ipv4(g[i])) return false;
        n += 2;
        continue;
      }
      if (g[i].empty() || g[i].size() > 4) return false;
      for (char c : g[i])
        if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
      ++n;
    }
    return true;
  };
  int n = 0;
  if (dc == std::string_view::npos) return groups(s, true, n) && n == 8 && !s.empty();
  return groups(s.substr(0, dc), false, n) && groups(s.substr(dc + 2), true, n) && n <= 7;
}
bool ref_hostname(std::string_view s) {
  for (const auto& l : split(s, '.')) {
    if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
    for (char c : l)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}
bool ref_email(std::string_view s) {  // the subset documented in the README
  const std::size_t at = s.find('@');
  if (at == std::string_view::npos || at == 0 || at > 64) return false;
  const std::string_view local = s.substr(0, at), domain = s.substr(at + 1);
  for (const auto& a : split(local, '.')) {
    if (a.empty()) return false;
    for (char c : a)
      if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("!#$%&'*+/=?^_`{|}~-").find(c) == std::string_view::npos)
        return false;
  }
  if (domain.size() > 63) return false;
  const auto labels = split(domain, '.');
  if (labels.size() < 2) return false;
  for (const auto& l : labels) {
    if (l.empty() || l.front() == '-' || l.back() == '-' || l.find("--") != std::string::npos) return false;
    for (char c : l)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  std::string tld = labels.back();
  for (char& c : tld) {
    if (!std::isalpha(static_cast<unsigned char>(c))) return false;
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  for (const char* w : {"arpa", "invalid", "local", "localhost", "onion", "test"})
    if (tld == w) return false;
  return tld.size() >= 2;
}
bool ref_duration(std::string_view s) {  // JSON Schema's appendix A, read as designators in order
  if (s.size() < 2 || s[0] != 'P') return false;
  const std::string_view date_units = "YMD", time_units = "HMS";
  std::size_t i = 1;
  int last = -1, n_date = 0, n_time = 0;
  bool week = false, in_time = false;
  while (i < s.size()) {
    if (s[i] == 'T') {
      if (in_time || week) return false;
      in_time = true, last = -1, ++i;
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    if (j == i || j == s.size()) return false;
    const char u = s[j];
    if (!in_time && u == 'W') {
      if (n_date || week) return false;
      week = true;
    } else {
      const std::string_view units = in_time ? time_units : date_units;
      const std::size_t k = units.find(u);
      if (k == std::string_view::npos || week) return false;
      if (last >= 0 && static_cast<int>(k) != last + 1) return false;  // no unit skipped inside a run
      last = static_cast<int>(k);
      ++(in_time ? n_time : n_date);
    }
    i = j + 1;
  }
  if (week) return !in_time;
  return (n_date || n_time) && (!in_time || n_time);
}
bool ref_uri(std::string_view s) {
  const std::size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == s.size() || !std::isalpha(static_cast<unsigned char>(s[0])))
    return false;
  for (std::size_t i = 1; i < colon; ++i)
    if (!std::isalnum(static_cast<unsigned char>(s[i])) && s[i] != '+' && s[i] != '.' && s[i] != '-') return false;
  for (std::size_t i = colon + 1; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) || !std::isxdigit(static_cast<unsigned char>(s[i + 2])))
        return false;
      i += 2;
    } else if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("-._~:/?#[]@!$&'()*+,;=").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// The completion search of json_schema_test_util.h with an order fit for these formats: the
// closing quote, then the separators and designators, then digits from 9 down (the util's order
// would run down a URI's scheme or a duration's digits forever).
bool format_completion(const SchemaPrefix& p, std::string& found, int& budget) {
  static const std::string order = search_order("\":@.ZYMWDTHS9876543210");
  return completion(p, found, budget, 400, order);
}

struct FormatRef {
  const char* name;
  bool (*ok)(std::string_view);
};
const FormatRef kFormatRefs[] = {{"date", ref_date},   {"time", ref_time},         {"date-time", ref_date_time},
                                 {"uuid", ref_uuid},   {"ipv4", ref_ipv4},         {"ipv6", ref_ipv6},
                                 {"hostname", ref_hostname}, {"email", ref_email}, {"duration", ref_duration},
                                 {"uri", ref_uri}};

std::shared_ptr<const JsonSchema> string_format(std::string_view name) {
  return compile(std::string(R"({"type": "string", "format": ")") + std::string(name) + "\"}");
}
std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

TEST(JsonSchemaFormat, WrittenCases) {
  struct Case {
    const char* format;
    std::vector<std::string> yes, no;
  };
  const Case cases[] = {
      {"date",
       {"2024-02-29", "2000-02-29", "2023-02-28", "0001-01-01", "9999-12-31", "2023-04-30", "1600-02-29", "0004-02-29"},
       {"2023-02-29", "1900-02-29", "2100-02-29", "2023-04-31", "2023-06-31", "2023-13-01", "2023-00-10", "2023-01-00",
        "2023-01-32", "0000-01-01", "0000-02-29", "2023-1-01", "20230101", "2023-01-01T00:00:00Z", "", "+2023-01-01"}},
      {"time",
       {"00:00:00Z", "23:59:59Z", "12:30:00.5+05:30", "12:30:00.123456-23:59", "01:02:03+00:00"},
       {"24:00:00Z", "23:60:00Z", "23:59:60Z", "12:30:00", "12:30Z", "12:30:00.Z", "12:30:00.1234567Z", "12:30:00+24:00",
        "12:30:00+05:60", "12:30:00+0530", "12:30:00z", "1:02:03Z"}},
      {"date-time",
       {"2024-02-29T23:59:59Z", "2000-01-01T00:00:00.000001+14:00", "1999-12-31T12:00:00-08:00"},
       {"2023-02-29T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01t00:00:00Z", "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00", "2024-01-01", "2024-01-01T00:00Z"}},
      {"uuid",
       {"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000", "00000000-0000-0000-0000-000000000000"},
       {"123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400", "123e4567-e89b-12d3-a456-4266141740000",
        "g23e4567-e89b-12d3-a456-426614174000", "{123e4567-e89b-12d3-a456-426614174000}"}},
      {"ipv4",
       {"0.0.0.0", "255.255.255.255", "192.168.1.10", "10.0.0.1"},
       {"256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1.2.3.04", "1..2.3", "1.2.3.-4", " 1.2.3.4", "300.1.1.1"}},
      {"ipv6",
       {"::", "::1", "1::", "2001:db8::1", "2001:0db8:0000:0000:0000:ff00:0042:8329", "::ffff:192.168.0.1", "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8", "fe80::1:2", "1:2:3:4:5:6:1.2.3.4", "ABCD::ef"},
       {":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "1:2:3:4:5:6:7:1.2.3.4", "::256.1.1.1",
        "fe80::1%eth0", "g::", "1:"}},
      {"hostname",
       {"localhost", "example.com", "a-b.c-d.e", "1.2.3.4", "xn--bcher-kva.example", "A"},
       {"", "-a.com", "a-.com", "a..b", ".a", "a.", "a_b.com", "a b", ("x" + std::string(64, 'y')).c_str()}},
      {"email",
       {"a@b.co", "first.last@example.com", "x+tag@sub.example.org", "o'neil@ex-ample.io", "a!#$%&'*+/=?^_`{|}~-@ex.museum"},
       {"a@b", "a@b.c", "@b.co", "a@.co", "a.@b.co", ".a@b.co", "a..b@c.co", "a@b..co", "a@-b.co", "a@b-.co", "a@b--c.co",
        "a@b.c0", "a@b.test", "a@b.LOCALHOST", "a@b.local", "a@b.onion", "a@b.arpa", "a@b.invalid", "a b@c.co", "a@b.co.",
        "\"a\"@b.co", (std::string(65, 'a') + "@b.co").c_str(), ("a@" + std::string(61, 'b') + ".co").c_str()}},
      {"duration",
       {"P1Y", "P1Y2M3DT4H5M6S", "P3W", "PT1S", "P1D", "PT1H1M1S", "P1MT1M"},
       {"P", "PT", "PT1H1S", "P1Y1D", "P1W1D", "P1H", "PT1D", "P1S", "1Y", "P1.5Y", "P1YT", "P1D1Y"}},
      {"uri",
       {"https://example.com/a?b=c#d", "urn:isbn:0451450523", "mailto:a@b.co", "x:%20"},
       {"example.com", "1http://a", "http:", "http://a b", "http://a%2", "http://é", "://a", "ht tp://a"}},
  };
  for (const auto& c : cases) {
    const auto s = string_format(c.format);
    for (const auto& t : c.yes) EXPECT_TRUE(accepts(*s, in_quotes(t))) << c.format << " should take " << t;
    for (const auto& t : c.no) EXPECT_FALSE(accepts(*s, in_quotes(t))) << c.format << " should refuse " << t;
    const FormatRef* ref = nullptr;
    for (const auto& r : kFormatRefs)
      if (std::string_view(r.name) == c.format) ref = &r;
    ASSERT_TRUE(ref);
    for (const auto& t : c.yes) EXPECT_TRUE(ref->ok(t)) << "reference " << c.format << " on " << t;
    for (const auto& t : c.no) EXPECT_FALSE(ref->ok(t)) << "reference " << c.format << " on " << t;
  }
}

TEST(JsonSchemaFormat, EveryDateAgainstTheCalendar) {
  // Every year 0000-9999 with months 00-13 and days 00, 01, 27-32; every day 00-32 of every month
  // 00-13 in years 0000-0010, 1890-2110 and 9990-9999.
  const auto s = string_format("date");
  long long texts = 0, valid = 0;
  char buf[16];
  for (int y = 0; y <= 9999; ++y) {
    const bool all = y <= 10 || (y >= 1890 && y <= 2110) || y >= 9990;
    for (int m = 0; m <= 13; ++m)
      for (int d = 0; d <= 32; ++d) {
        if (!all && d > 1 && d < 27) continue;
        std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", y, m, d);
        const bool ok = ref_date(buf);
        ASSERT_EQ(accepts(*s, in_quotes(buf)), ok) << buf;
        ++texts, valid += ok;
      }
  }
  std::printf("date: %lld texts, %lld real dates\n", texts, valid);
  EXPECT_GT(valid, 10000LL * 12 * 5);
}

// Random walks: from the opening quote, bytes taken at random among those the recognizer allows
// (the closing quote with odds 1/3 where allowed); every string closed must pass the reference,
// and from every prefix on the way the completion search must find an end the reference passes.
TEST(JsonSchemaFormat, RandomWalksPassTheReference) {
  Rng rng(20261205);
  for (const auto& ref : kFormatRefs) {
    const auto s = string_format(ref.name);
    int closed = 0;
    for (int walk = 0; walk < 400; ++walk) {
      SchemaPrefix p(*s);
      ASSERT_TRUE(p.feed('"'));
      std::string body;
      for (;;) {
        std::string found;
        int budget = 20000;
        ASSERT_TRUE(format_completion(p, found, budget)) << ref.name << " " << body;
        ASSERT_EQ(found.back(), '"');
        ASSERT_TRUE(ref.ok(body + found.substr(0, found.size() - 1))) << ref.name << " " << body << " + " << found;
        std::vector<uint8_t> allowed;
        for (int b = 0; b < 256; ++b) {
          SchemaPrefix q = p;
          if (q.feed(static_cast<uint8_t>(b))) allowed.push_back(static_cast<uint8_t>(b));
        }
        ASSERT_FALSE(allowed.empty()) << ref.name << " " << body;
        const bool can_close = std::find(allowed.begin(), allowed.end(), '"') != allowed.end();
        if (can_close && (rng() % 3 == 0 || allowed.size() == 1 || body.size() > 300)) {
          ASSERT_TRUE(p.feed('"'));
          ASSERT_TRUE(p.complete());
          EXPECT_TRUE(ref.ok(body)) << ref.name << " " << body;
          ++closed;
          break;
        }
        std::erase(allowed, static_cast<uint8_t>('"'));
        const uint8_t b = allowed[rng() % allowed.size()];
        ASSERT_TRUE(p.feed(b));
        body += static_cast<char>(b);
      }
    }
    EXPECT_EQ(closed, 400) << ref.name;
  }
}

// Random texts near each format's (its strings mutated: a byte changed, dropped or doubled), both
// ways against the reference.
TEST(JsonSchemaFormat, MutationsAgreeWithTheReference) {
  Rng rng(7);
  const std::string alphabet = "0123456789abcdefABCDEFTZPYMWDHS:.-+@_/%x ";
  long long texts = 0, valid = 0;
  for (const auto& ref : kFormatRefs) {
    const auto s = string_format(ref.name);
    std::vector<std::string> seeds;
    for (int i = 0; i < 50; ++i) {  // valid strings from the recognizer's completions, then walks
      SchemaPrefix p(*s);
      p.feed('"');
      std::string body;
      for (int k = 0; k < 80; ++k) {
        std::vector<uint8_t> allowed;
        for (int b = 0; b < 256; ++b) {
          SchemaPrefix q = p;
          if (b != '"' && q.feed(static_cast<uint8_t>(b))) allowed.push_back(static_cast<uint8_t>(b));
        }
        if (allowed.empty()) break;
        SchemaPrefix q = p;
        if (q.feed('"') && rng() % 4 == 0) break;
        const uint8_t b = allowed[rng() % allowed.size()];
        p.feed(b), body += static_cast<char>(b);
      }
      std::string found;
      int budget = 20000;
      ASSERT_TRUE(format_completion(p, found, budget));
      seeds.push_back(body + found.substr(0, found.size() - 1));
    }
    for (int i = 0; i < 4000; ++i) {
      std::string t = seeds[rng() % seeds.size()];
      for (int k = 1 + static_cast<int>(rng() % 2); k > 0 && !t.empty(); --k) {
        const std::size_t at = rng() % t.size();
        switch (rng() % 3) {
          case 0: t[at] = alphabet[rng() % alphabet.size()]; break;
          case 1: t.erase(at, 1); break;
          default: t.insert(at, 1, t[at]);
        }
      }
      const bool ok = ref.ok(t);
      ASSERT_EQ(accepts(*s, in_quotes(t)), ok) << ref.name << " " << t;
      ++texts, valid += ok;
    }
  }
  std::printf("format mutations: %lld texts, %lld valid\n", texts, valid);
}

TEST(JsonSchemaFormat, BesideOtherKeywords) {
  // With a pattern: both hold.
  auto s = compile(R"({"type": "string", "format": "date", "pattern": "^2024-"})");
  EXPECT_TRUE(accepts(*s, R"("2024-02-29")"));
  EXPECT_FALSE(accepts(*s, R"("2023-02-28")"));
  EXPECT_FALSE(accepts(*s, R"("2024-02-30")"));
  EXPECT_TRUE(completes(SchemaPrefix(*s)));
  // With lengths: both hold, no dead end.
  s = compile(R"({"type": "string", "format": "ipv4", "maxLength": 9})");
  EXPECT_TRUE(accepts(*s, R"("1.2.3.255")"));
  EXPECT_FALSE(accepts(*s, R"("1.2.34.255")"));
  SchemaPrefix p(*s);
  ASSERT_TRUE(p.feed("\"1.2.3."));
  EXPECT_TRUE(completes(p));
  EXPECT_FALSE(SchemaPrefix(p).feed("2556"));
  EXPECT_THROW(compile(R"({"type": "string", "format": "date", "pattern": "x"})"), dpa::Error);  // no string is both
  s = compile(R"({"type": ["string", "null"], "format": "date", "pattern": "x"})");
  EXPECT_TRUE(accepts(*s, "null"));
  EXPECT_EQ(feed_bytes(*s, R"("x")").taken, 0u);
  s = compile(R"({"type": ["string", "null"], "format": "date", "minLength": 11})");  // nor of that length
  EXPECT_TRUE(accepts(*s, "null"));
  EXPECT_EQ(feed_bytes(*s, R"("2024-01-01")").taken, 0u);
  // All three: format, pattern, lengths.
  s = compile(R"({"type": "string", "format": "date-time", "pattern": "^2024-02-29T", "maxLength": 20})");
  EXPECT_TRUE(accepts(*s, R"("2024-02-29T23:59:59Z")"));
  EXPECT_FALSE(accepts(*s, R"("2024-02-29T23:59:59.1Z")"));  // 22 characters
  EXPECT_FALSE(accepts(*s, R"("2024-02-28T23:59:59Z")"));
  p = SchemaPrefix(*s);
  ASSERT_TRUE(p.feed("\"2024-02-29T23:59:59"));
  EXPECT_FALSE(SchemaPrefix(p).feed('.'));  // a fraction cannot fit
  EXPECT_TRUE(completes(p));
  s = compile(R"({"type": ["string", "null"], "format": "uuid", "maxLength": 35})");
  EXPECT_EQ(feed_bytes(*s, "\"1").taken, 0u);
  // A pattern whose text could pass for a format's name in a cache key is still its own.
  s = compile(R"({"type": "object", "properties": {"a": {"type": "string", "format": "date", "maxLength": 10},
                  "b": {"type": "string", "pattern": "^fdate$", "maxLength": 10}}})");
  EXPECT_TRUE(accepts(*s, R"({"a":"2024-01-01","b":"fdate"})"));
  EXPECT_FALSE(accepts(*s, R"({"b":"2024-01-01"})"));
  // On non-strings it asserts nothing.
  s = compile(R"({"type": ["string", "integer"], "format": "uuid"})");
  EXPECT_TRUE(accepts(*s, "12"));
  EXPECT_FALSE(accepts(*s, R"("12")"));
  EXPECT_TRUE(accepts(*s, R"("123e4567-e89b-12d3-a456-426614174000")"));
  s = compile(R"({"format": "ipv4"})");
  EXPECT_TRUE(accepts(*s, R"({"a":1})"));
  EXPECT_TRUE(accepts(*s, R"("1.2.3.4")"));
  EXPECT_FALSE(accepts(*s, R"("1.2.3")"));
  // Enum values not of the format are dropped.
  s = compile(R"({"enum": ["2024-01-01", "soon", 3], "format": "date"})");
  EXPECT_TRUE(accepts(*s, R"("2024-01-01")"));
  EXPECT_TRUE(accepts(*s, "3"));
  EXPECT_FALSE(accepts(*s, R"("soon")"));
  // Unknown names, and names that are not strings, are annotations.
  for (const char* f : {R"("color")", R"("uuid4")", R"("iri")", "3", "null"}) {
    s = compile(std::string(R"({"type": "string", "format": )") + f + "}");
    EXPECT_TRUE(accepts(*s, R"("anything")")) << f;
  }
  // A format does not count against the patterns: 16 patterns and every format in one schema.
  std::string many = R"({"type": "object", "properties": {)";
  for (int i = 0; i < 16; ++i) many += "\"p" + std::to_string(i) + "\": {\"type\": \"string\", \"pattern\": \"^a{" + std::to_string(i) + "}$\"},";
  for (const auto& r : kFormatRefs) many += std::string("\"") + r.name + "\": {\"type\": \"string\", \"format\": \"" + r.name + "\"},";
  many.pop_back();
  EXPECT_NO_THROW(compile(many + "}}"));
  // uniqueItems on strings of a format: uniqueness followed, the format not (see the README).
  s = compile(R"({"type": "array", "items": {"type": "string", "format": "uuid"}, "uniqueItems": true})");
  EXPECT_TRUE(accepts(*s, R"(["a","b"])"));
  EXPECT_FALSE(accepts(*s, R"(["a","a"])"));
  // Inside anyOf (pydantic's Optional[datetime]) and through $ref it holds.
  s = compile(R"({"$defs": {"d": {"type": "string", "format": "date-time"}},
                  "type": "object", "properties": {"a": {"anyOf": [{"$ref": "#/$defs/d"}, {"type": "null"}]}}})");
  EXPECT_TRUE(accepts(*s, R"({"a":"2024-02-29T12:00:00Z"})"));
  EXPECT_TRUE(accepts(*s, R"({"a":null})"));
  EXPECT_FALSE(accepts(*s, R"({"a":"2023-02-29T12:00:00Z"})"));
  EXPECT_FALSE(accepts(*s, R"({"a":"yesterday"})"));
}

}  // namespace
