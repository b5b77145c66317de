// The JSON Schema recognizer on hand-written cases (each keyword's edges, compile errors), and
// the token trie's allowed set against feeding each token alone. The differential tests against
// an independent validator are in test_json_schema.cpp.
#include <gtest/gtest.h>

#include <random>
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
                  "minLength and maxLength beside a 'pattern' are supported up to 1000"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "^[ab]{10}$", "maxLength": 5})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": 5})"), "'pattern' must be a string"));
  EXPECT_TRUE(has(error(R"({"type": "string", "pattern": "^[^\\s\\S]$"})"), "matches no text"));
  std::string patterns = R"({"type": "object", "properties": {)";
  for (int i = 0; i < 17; ++i) patterns += (i ? "," : "") + std::string("\"p") + std::to_string(i) + R"(": {"type": "string", "pattern": "a)" + std::to_string(i) + "\"}";
  EXPECT_TRUE(has(error(patterns + "}}"), "more than 16 distinct patterns"));
  EXPECT_EQ(error(R"({"type": "object", "properties": {"a": {"pattern": "^x$"}, "b": {"pattern": "^x$"}, "c": {"type": "string", "pattern": "^x$"}}})"),
            "(compiled)");  // one pattern, compiled once
  for (const char* k : {"patternProperties", "uniqueItems", "minProperties", "if", "not", "multipleOf", "contains", "dependentRequired"})
    EXPECT_TRUE(has(error(std::string("{\"") + k + "\": {}}"), std::string("'") + k + "'")) << k;
  EXPECT_TRUE(has(error(R"({"$ref": "https://example.com/s.json"})"), "$ref"));
  EXPECT_TRUE(has(error(R"({"$ref": "#/$defs/missing"})"), "points to nothing"));
  EXPECT_TRUE(has(error(R"({"$ref": "#"})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"enum": []})"), "admits no value"));
  EXPECT_TRUE(has(error("false"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "array", "minItems": 3, "maxItems": 2})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "object", "required": ["a"], "additionalProperties": false})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]})"), "admits no value"));
  EXPECT_TRUE(has(error(R"({"type": "number", "minimum": 0})"), "minimum/maximum on type number is not supported"));
  EXPECT_TRUE(has(error(R"({"minimum": 0})"), "minimum/maximum on type number is not supported"));
  EXPECT_TRUE(has(error(R"({"type": "integer", "exclusiveMinimum": true})"), "exclusiveMinimum"));
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


}  // namespace
