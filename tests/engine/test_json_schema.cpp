// The JSON Schema recognizer against an independent validator written here over Boost.JSON's
// values (numbers under bounds compared exactly, as the decimals of their texts): random schemas
// of the supported subset, random instances of them (valid ones serialized compactly, with doubles
// in plain decimal and with random whitespace, then mutated, truncated, swapped between schemas),
// with both directions checked; and no dead ends on random walks. Hand-written cases and the
// token trie's masks are in test_json_schema_cases.cpp.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/json_schema.h"
#include "json_schema_test_util.h"

namespace {
namespace json = boost::json;
using dpa::engine::JsonSchema;
using dpa::engine::SchemaPrefix;
using dpa::engine::test::accepts;
using dpa::engine::test::Fed;
using dpa::engine::test::compile;
using dpa::engine::test::feed_bytes;
using dpa::engine::is_ws;

// ---------------------------------------------------------------------------------------------
// The validator: JSON Schema semantics for the subset, over parsed values.

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xc0) != 0x80;
  return n;
}

// A number's text as an exact decimal: sign, digits without leading or trailing zeros, and the
// point's place (the value is 0.digits × 10^point).
struct Decimal {
  bool neg = false;
  std::string digits;
  int64_t point = 0;
};
Decimal decimal(std::string_view t) {
  Decimal d;
  std::size_t i = 0;
  if (i < t.size() && t[i] == '-') d.neg = true, ++i;
  for (; i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])); ++i) d.digits += t[i], ++d.point;
  if (i < t.size() && t[i] == '.')
    for (++i; i < t.size() && std::isdigit(static_cast<unsigned char>(t[i])); ++i) d.digits += t[i];
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    const bool neg = t[++i] == '-';
    int64_t e = 0;
    for (i += t[i] == '-' || t[i] == '+'; i < t.size(); ++i) e = std::min<int64_t>(e * 10 + (t[i] - '0'), int64_t{1} << 40);
    d.point += neg ? -e : e;
  }
  while (!d.digits.empty() && d.digits.front() == '0') d.digits.erase(0, 1), --d.point;
  while (!d.digits.empty() && d.digits.back() == '0') d.digits.pop_back();
  return d.digits.empty() ? Decimal{} : d;
}
int compare(const Decimal& a, const Decimal& b) {
  auto sign = [](const Decimal& d) { return d.digits.empty() ? 0 : d.neg ? -1 : 1; };
  if (sign(a) != sign(b)) return sign(a) < sign(b) ? -1 : 1;
  const int c = a.point != b.point ? (a.point < b.point ? -1 : 1) : a.digits.compare(b.digits);
  return sign(a) * ((c > 0) - (c < 0));
}

// x / q is an integer, exactly: x = X·10^a and q = Q·10^b with X, Q their digits, so x / q is
// X·10^(a-b) / Q; where a < b it is not one (X has no trailing zeros), else X·10^(a-b) mod Q.
bool multiple_of(const Decimal& x, const Decimal& q) {
  if (x.digits.empty()) return true;
  const int64_t e = (x.point - static_cast<int64_t>(x.digits.size())) - (q.point - static_cast<int64_t>(q.digits.size()));
  if (e < 0) return false;
  const uint64_t qq = std::stoull(q.digits);
  uint64_t r = 0;
  for (char c : x.digits) r = (r * 10 + static_cast<uint64_t>(c - '0')) % qq;
  for (int64_t i = 0; i < e && r; ++i) r = r * 10 % qq;
  return r == 0;
}

// The texts of a parsed text's numbers, by the values they became (the recognizer reads digits,
// a double does not hold them all); nullopt where they do not pair up (a repeated key dropped some).
using NumberTexts = std::map<const json::value*, std::string>;
std::optional<NumberTexts> number_texts(const json::value& v, std::string_view text) {
  std::vector<std::string> tokens;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '"') {
      for (++i; text[i] != '"'; ++i) i += text[i] == '\\';
    } else if (text[i] == '-' || std::isdigit(static_cast<unsigned char>(text[i]))) {
      const std::size_t end = text.find_first_not_of("0123456789+-.eE", i);
      tokens.emplace_back(text.substr(i, end - i));
      i = end - 1;
    }
  }
  NumberTexts out;
  std::size_t at = 0;
  bool ok = true;
  auto walk = [&](auto& self, const json::value& x) -> void {
    if (x.is_number()) {
      if (at < tokens.size()) out[&x] = tokens[at];
      ok = ok && at++ < tokens.size();
    } else if (x.is_object()) {
      for (const auto& kv : x.as_object()) self(self, kv.value());
    } else if (x.is_array()) {
      for (const auto& e : x.as_array()) self(self, e);
    }
  };
  walk(walk, v);
  if (!ok || at != tokens.size()) return std::nullopt;
  return out;
}

struct Validator {
  const json::value& root;
  const NumberTexts* texts = nullptr;  // numbers' texts where known; Boost.JSON's serialization otherwise

  const json::value& resolve(std::string_view ref) const {
    std::string ptr;
    for (std::size_t i = 1; i < ref.size(); ++i) {
      if (ref[i] == '%' && i + 2 < ref.size()) {
        ptr += static_cast<char>(std::stoi(std::string(ref.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        ptr += ref[i];
      }
    }
    return ptr.empty() ? root : root.at_pointer(ptr);
  }

  std::string text(const json::value& v) const {
    if (texts)
      if (const auto it = texts->find(&v); it != texts->end()) return it->second;
    return json::serialize(v);
  }

  // JSON Schema's equality (uniqueItems): numbers by value (their texts' decimals: 1 = 1.0 = 1e0,
  // -0 = 0), strings by their decoded characters, arrays item by item, objects key by key.
  bool same(const json::value& a, const json::value& b) const {
    if (a.is_number() || b.is_number()) return a.is_number() && b.is_number() && compare(decimal(text(a)), decimal(text(b))) == 0;
    if (a.kind() != b.kind()) return false;
    if (a.is_array()) {
      const json::array &x = a.as_array(), &y = b.as_array();
      if (x.size() != y.size()) return false;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (!same(x[i], y[i])) return false;
      return true;
    }
    if (a.is_object()) {
      const json::object &x = a.as_object(), &y = b.as_object();
      if (x.size() != y.size()) return false;
      for (const auto& kv : x)
        if (!y.contains(kv.key()) || !same(kv.value(), y.at(kv.key()))) return false;
      return true;
    }
    return a == b;  // strings (decoded), booleans, null
  }

  bool type_ok(std::string_view t, const json::value& v) const {
    if (t == "null") return v.is_null();
    if (t == "boolean") return v.is_bool();
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    if (t == "string") return v.is_string();
    if (t == "integer") return v.is_int64() || v.is_uint64();
    if (t == "number") return v.is_number();
    ADD_FAILURE() << "type " << t;
    return false;
  }

  bool valid(const json::value& s, const json::value& v) const {
    if (s.is_bool()) return s.get_bool();
    const json::object& o = s.as_object();
    if (const auto* r = o.if_contains("$ref")) return valid(resolve(r->as_string()), v);
    if (const auto* a = o.if_contains("allOf"))
      for (const auto& sub : a->as_array())
        if (!valid(sub, v)) return false;
    for (const char* k : {"anyOf", "oneOf"})
      if (const auto* a = o.if_contains(k))
        if (std::none_of(a->as_array().begin(), a->as_array().end(), [&](const json::value& sub) { return valid(sub, v); }))
          return false;
    if (const auto* t = o.if_contains("type")) {
      if (t->is_string() && !type_ok(t->as_string(), v)) return false;
      if (t->is_array() && std::none_of(t->as_array().begin(), t->as_array().end(), [&](const json::value& x) { return type_ok(x.as_string(), v); }))
        return false;
    }
    // enum / const: a number in the value's canonical form only (the recognizer's restriction).
    auto is = [&](const json::value& x) { return x == v && (!v.is_number() || text(v) == json::serialize(x)); };
    if (const auto* c = o.if_contains("const"); c && !is(*c)) return false;
    if (const auto* e = o.if_contains("enum"); e && std::none_of(e->as_array().begin(), e->as_array().end(), is)) return false;
    if (v.is_object()) {
      const json::object& obj = v.as_object();
      const json::object* props = o.contains("properties") ? &o.at("properties").as_object() : nullptr;
      for (const auto& kv : obj) {
        const json::value* sub = props ? props->if_contains(kv.key()) : nullptr;
        if (!sub) sub = o.if_contains("additionalProperties");
        if (sub && !valid(*sub, kv.value())) return false;
      }
      if (const auto* r = o.if_contains("required"))
        for (const auto& name : r->as_array())
          if (!obj.contains(name.as_string())) return false;
    }
    if (v.is_array()) {
      const json::array& arr = v.as_array();
      const json::array* prefix = o.contains("prefixItems") ? &o.at("prefixItems").as_array() : nullptr;
      for (std::size_t i = 0; i < arr.size(); ++i) {
        const json::value* sub = prefix && i < prefix->size() ? &(*prefix)[i] : o.if_contains("items");
        if (sub && !valid(*sub, arr[i])) return false;
      }
      if (const auto* m = o.if_contains("minItems"); m && arr.size() < m->to_number<uint64_t>()) return false;
      if (const auto* m = o.if_contains("maxItems"); m && arr.size() > m->to_number<uint64_t>()) return false;
      if (const auto* u = o.if_contains("uniqueItems"); u && u->as_bool())
        for (std::size_t i = 0; i < arr.size(); ++i)
          for (std::size_t j = i + 1; j < arr.size(); ++j)
            if (same(arr[i], arr[j])) return false;
    }
    if (v.is_string()) {
      if (const auto* p = o.if_contains("pattern")) {  // ECMA-262's search, as JSON Schema says
        const std::string text(v.as_string());
        if (!std::regex_search(text, std::regex(std::string(p->as_string()), std::regex::ECMAScript))) return false;
      }
      const std::size_t n = code_points(v.as_string());
      if (const auto* m = o.if_contains("minLength"); m && n < m->to_number<uint64_t>()) return false;
      if (const auto* m = o.if_contains("maxLength"); m && n > m->to_number<uint64_t>()) return false;
    }
    if (v.is_number()) {  // exactly, as the texts' decimals
      const std::string t = text(v);
      const Decimal x = decimal(t);
      bool bounded = false;
      for (const char* k : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
        const auto* b = o.if_contains(k);
        if (!b) continue;
        bounded = true;
        const int c = compare(x, decimal(json::serialize(*b)));
        const std::string_view key(k);
        if (key == "minimum" ? c < 0 : key == "exclusiveMinimum" ? c <= 0 : key == "maximum" ? c > 0 : c >= 0) return false;
      }
      // The recognizer's restriction: under bounds, a schema admitting non-integers takes no exponent.
      const json::value* type = o.if_contains("type");
      const bool numbers = !type || (type->is_string() ? type->as_string() == "number"
                                                        : std::find(type->as_array().begin(), type->as_array().end(), json::value("number")) != type->as_array().end());
      if (bounded && numbers && t.find_first_of("eE") != std::string::npos) return false;
      // And integers under bounds are written without "-0".
      if (bounded && !numbers && t.starts_with("-") && x.digits.empty()) return false;
      if (const auto* m = o.if_contains("multipleOf")) {
        const Decimal q = decimal(json::serialize(*m));
        if (!multiple_of(x, q)) return false;
        // The recognizer's restrictions: no exponent on numbers under multipleOf; integers under
        // one that not every integer meets, as under bounds.
        if (numbers && t.find_first_of("eE") != std::string::npos) return false;
        if (!numbers && t.starts_with("-") && x.digits.empty() && !multiple_of(decimal("1"), q)) return false;
      }
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------------------
// Random schemas and instances.

using Rng = std::mt19937_64;
int pick(Rng& rng, int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); }
bool coin(Rng& rng, int percent) { return pick(rng, 100) < percent; }

// Names with shared prefixes, escapes and multibyte characters.
const char* const kNames[] = {"a", "ab", "abc", "b", "name", "nam", "x y", "q\"", "n\nl", "\xc3\xa9t\xc3\xa9", "", "/"};
const char* const kText[] = {"a", "b", " ", "\"", "\\", "\n", "\x01", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "z", "/", "\x7f"};

// Patterns whose meaning std::regex (bytes, ECMAScript) and the recognizer (code points) share
// on the texts above, with strings that match them.
struct PatternCase {
  const char* pattern;
  std::vector<const char*> examples;
};
const PatternCase kPatterns[] = {
    {R"(^[ab]+$)", {"a", "ab", "bba"}},
    {R"(b)", {"b", "abz", "\xc3\xa9" "b\n"}},
    {R"(^a)", {"a", "ab", "a\"\\"}},
    {R"(z$)", {"z", "aaz", "\xf0\x9f\x98\x80z"}},
    {R"(^(ab|\d)*$)", {"", "ab1", "2ab"}},
    {R"(^\d{1,3}$)", {"1", "42", "999"}},
    {R"(^[ab\n"\\]*$)", {"", "a\"b", "\\\n"}},
    {R"(^[^"]*$)", {"", "a b", "\xe2\x82\xac\x01"}},
    {R"(")", {"\"", "a\"b"}},
    {R"(^$)", {""}},
};

json::value scalar_value(Rng& rng) {
  switch (pick(rng, 5)) {
    case 0: return json::value(kNames[pick(rng, std::size(kNames))]);
    case 1: return json::value(static_cast<int64_t>(pick(rng, 130) - 10));
    case 2: return json::value(coin(rng, 50));
    case 3: return json::value(nullptr);
    default: return json::value(std::string(kText[pick(rng, std::size(kText))]) + "s");
  }
}

json::value gen_schema(Rng& rng, int depth, int n_defs);

json::value integer_schema(Rng& rng) {
  json::object s{{"type", "integer"}};
  static const std::pair<int64_t, int64_t> kRanges[] = {{10, 99}, {-5, 5}, {-1000, -10}, {0, 0}, {7, 7}, {-1, 250}, {3, 1000000000000}, {-9223372036854775807LL - 1, -9223372036854775807LL}};
  const auto [lo, hi] = kRanges[pick(rng, std::size(kRanges))];
  switch (pick(rng, 5)) {
    case 0: break;  // unbounded
    case 1: s["minimum"] = lo, s["maximum"] = hi; break;
    case 2: s["exclusiveMinimum"] = lo - (lo > INT64_MIN ? 1 : 0), s["exclusiveMaximum"] = hi + (hi < INT64_MAX ? 1 : 0); break;
    case 3: s["minimum"] = lo; break;
    default: s["maximum"] = hi;
  }
  if (coin(rng, 25)) {
    static const double kMultiples[] = {5, 3, 0.5, 2.5, 10, 4, 0.3};
    s["multipleOf"] = kMultiples[pick(rng, std::size(kMultiples))];
  }
  return s;
}

// Bounds on numbers: decimals that doubles hold as written (Boost.JSON writes them back shortest,
// with an exponent: "1E-3"), inclusive, exclusive, both, one side, empty; beside other types at times.
json::value number_schema(Rng& rng) {
  json::object s;
  switch (pick(rng, 4)) {
    case 0: s["type"] = json::array{"number", "null"}; break;
    case 1: break;  // no type: the bounds bear on numbers only
    default: s["type"] = "number";
  }
  static const std::pair<double, double> kRanges[] = {{0, 1}, {-2.5, 3.75}, {0.001, 150}, {-100, -0.5}, {-1, 1}, {0.1, 0.1},
                                                      {1.5, 2}, {12345.678, 12345.679}, {-0.3, 0}, {0, 0}, {-1e-5, 2.5e-5}};
  const auto [lo, hi] = kRanges[pick(rng, std::size(kRanges))];
  switch (pick(rng, 7)) {
    case 0: s["minimum"] = lo, s["maximum"] = hi; break;
    case 1: s["exclusiveMinimum"] = lo, s["exclusiveMaximum"] = hi; break;
    case 2: s["minimum"] = lo; break;
    case 3: s["exclusiveMaximum"] = hi; break;
    case 4: s["minimum"] = lo, s["exclusiveMinimum"] = lo, s["maximum"] = hi; break;
    case 5: s["exclusiveMinimum"] = lo, s["maximum"] = hi; break;
    default: s["minimum"] = static_cast<int64_t>(std::floor(lo)), s["maximum"] = hi;
  }
  if (coin(rng, 25)) {  // up to 1 beside bounds on numbers
    static const double kMultiples[] = {0.5, 0.25, 0.01, 0.1, 1, 0.125};
    s["multipleOf"] = kMultiples[pick(rng, std::size(kMultiples))];
  }
  return s;
}

// A schema every value of which is a scalar (uniqueItems' items).
json::value scalar_schema(Rng& rng, int depth = 1) {
  switch (pick(rng, depth > 0 ? 9 : 8)) {
    case 0: {
      json::object s{{"type", "string"}};
      if (coin(rng, 50)) s["maxLength"] = pick(rng, 3);
      if (coin(rng, 20)) s["minLength"] = pick(rng, 2);
      return s;
    }
    case 1: return integer_schema(rng);
    case 2: {
      json::value s = number_schema(rng);
      if (!s.as_object().contains("type")) s.as_object()["type"] = "number";
      s.as_object().erase("multipleOf");  // refused beside uniqueItems on numbers
      return s;
    }
    case 3: return json::object{{"type", coin(rng, 50) ? "boolean" : "null"}};
    case 4: return json::object{{"type", json::array{"null", "boolean", "integer"}}};
    case 5: {
      json::array e;
      for (int i = 0, n = 1 + pick(rng, 4); i < n; ++i) e.push_back(scalar_value(rng));
      return json::object{{"enum", e}};
    }
    case 6: {  // numbers equal as values, written apart
      static const json::value kNumbers[] = {json::value(1), json::value(1.0), json::value(2), json::value(0.5), json::value(-0.0), json::value(0)};
      json::array e;
      for (int i = 0, n = 1 + pick(rng, 4); i < n; ++i) e.push_back(kNumbers[pick(rng, std::size(kNumbers))]);
      return json::object{{"enum", e}};
    }
    case 7: return json::object{{"type", coin(rng, 50) ? "number" : "integer"}};
    default: return json::object{{"anyOf", json::array{scalar_schema(rng, depth - 1), scalar_schema(rng, depth - 1)}}};
  }
}

json::value gen_schema(Rng& rng, int depth, int n_defs) {
  if (depth > 0 && coin(rng, 8)) {  // a uniqueItems array of scalars
    json::object s{{"type", "array"}, {"uniqueItems", true}};
    if (coin(rng, 15)) {  // prefixItems whose items have many values each
      s["prefixItems"] = json::array{json::object{{"type", "string"}}, json::object{{"type", "integer"}}};
      s["items"] = json::object{{"type", coin(rng, 50) ? "string" : "number"}};
    } else {
      s["items"] = scalar_schema(rng);
    }
    if (coin(rng, 40)) s["minItems"] = pick(rng, 4);
    if (coin(rng, 30)) s["maxItems"] = (s.contains("minItems") ? s["minItems"].as_int64() : 0) + pick(rng, 3);
    return s;
  }
  const int kinds = depth <= 0 ? 7 : 13;
  switch (pick(rng, kinds)) {
    case 0: {
      json::object s{{"type", "string"}};
      const bool patterned = coin(rng, 30);
      if (patterned) s["pattern"] = kPatterns[pick(rng, std::size(kPatterns))].pattern;
      if (patterned && coin(rng, 50)) return s;
      if (coin(rng, 40)) s["minLength"] = pick(rng, 3);
      if (coin(rng, 40)) s["maxLength"] = (s.contains("minLength") ? s["minLength"].as_int64() : 0) + pick(rng, 4);
      return s;
    }
    case 1: return integer_schema(rng);
    case 2:
      if (coin(rng, 50)) return number_schema(rng);
      if (coin(rng, 30)) {
        static const double kMultiples[] = {0.5, 2.5, 3, 0.01, 0.25};
        return json::object{{"type", "number"}, {"multipleOf", kMultiples[pick(rng, std::size(kMultiples))]}};
      }
      return json::object{{"type", coin(rng, 50) ? "number" : "boolean"}};
    case 3: return json::object{{"type", "null"}};
    case 4: {
      json::array e;
      for (int i = 0, n = 1 + pick(rng, 4); i < n; ++i) e.push_back(scalar_value(rng));
      return coin(rng, 20) ? json::object{{"const", e[0]}} : json::object{{"enum", e}};
    }
    case 5:
      if (n_defs > 0) return json::object{{"$ref", "#/$defs/d" + std::to_string(pick(rng, n_defs))}};
      return json::value(true);
    case 6: return coin(rng, 50) ? json::value(json::object{}) : json::value(json::object{{"type", json::array{"string", "integer", "null"}}});
    case 7:
    case 8:
    case 9: {
      json::object s{{"type", "object"}}, props;
      json::array required;
      for (int i = 0, n = pick(rng, 4); i < n; ++i) {
        const char* name = kNames[pick(rng, std::size(kNames))];
        props[name] = gen_schema(rng, depth - 1, n_defs);
        if (coin(rng, 50) && std::find(required.begin(), required.end(), json::value(name)) == required.end()) required.push_back(json::value(name));
      }
      if (!props.empty()) s["properties"] = props;
      if (!required.empty()) s["required"] = required;
      switch (pick(rng, 4)) {
        case 0: s["additionalProperties"] = false; break;
        case 1: s["additionalProperties"] = true; break;
        case 2: s["additionalProperties"] = gen_schema(rng, 0, 0); break;
        default: break;
      }
      return s;
    }
    case 10: {
      json::object s{{"type", "array"}};
      if (coin(rng, 40)) {
        json::array prefix;
        for (int i = 0, n = 1 + pick(rng, 2); i < n; ++i) prefix.push_back(gen_schema(rng, depth - 1, n_defs));
        s["prefixItems"] = prefix;
        if (coin(rng, 50)) s["items"] = false;
      } else if (coin(rng, 80)) {
        s["items"] = gen_schema(rng, depth - 1, n_defs);
      }
      if (coin(rng, 40)) s["minItems"] = pick(rng, 3);
      if (coin(rng, 40)) s["maxItems"] = (s.contains("minItems") ? s["minItems"].as_int64() : 0) + pick(rng, 3);
      return s;
    }
    case 11: {
      json::array any;
      for (int i = 0, n = 2 + pick(rng, 2); i < n; ++i) any.push_back(gen_schema(rng, depth - 1, n_defs));
      return json::object{{"anyOf", any}};
    }
    default: {  // several types, each with its keywords
      json::object s{{"type", json::array{"object", "string", "integer"}}, {"maxLength", 3}};
      s["properties"] = json::object{{"a", gen_schema(rng, depth - 1, n_defs)}};
      s["required"] = json::array{"a"};
      return s;
    }
  }
}

// A root schema: a few definitions (one of them a recursive tree) and a body using them.
json::value gen_root(Rng& rng) {
  json::object defs;
  const int n_defs = pick(rng, 3);
  for (int i = 0; i < n_defs; ++i) defs["d" + std::to_string(i)] = gen_schema(rng, 1, 0);
  json::value body = gen_schema(rng, 3, n_defs);
  if (coin(rng, 15)) {  // a recursive tree
    defs["tree"] = json::parse(R"({"type": "object", "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 50},
        "kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}, "maxItems": 2}}, "required": ["v"], "additionalProperties": false})");
    body = json::object{{"$ref", "#/$defs/tree"}};
  }
  if (body.is_bool()) body = body.get_bool() ? json::value(json::object{}) : json::value(json::object{{"not", true}});
  if (!defs.empty()) body.as_object()["$defs"] = defs;
  return body;
}

json::value gen_instance(Rng& rng, const json::value& root, const json::value& s, int depth);

json::value any_value(Rng& rng, int depth) {
  switch (pick(rng, depth > 0 ? 7 : 5)) {
    case 0: return json::value(nullptr);
    case 1: return json::value(coin(rng, 50));
    case 2: return json::value(static_cast<int64_t>(pick(rng, 2000)) - 1000);
    case 3: return json::value(pick(rng, 1000) / 8.0);
    case 4: return scalar_value(rng);
    case 5: return json::array{any_value(rng, depth - 1), any_value(rng, depth - 1)};
    default: return json::object{{kNames[pick(rng, std::size(kNames))], any_value(rng, depth - 1)}};
  }
}

// A value meant to be valid (the validator decides: the generator cuts corners).
json::value gen_instance(Rng& rng, const json::value& root, const json::value& s, int depth) {
  if (s.is_bool()) return any_value(rng, 1);
  const json::object& o = s.as_object();
  if (const auto* r = o.if_contains("$ref")) return gen_instance(rng, root, Validator{root}.resolve(r->as_string()), depth);
  if (const auto* a = o.if_contains("anyOf")) return gen_instance(rng, root, a->as_array()[pick(rng, a->as_array().size())], depth);
  if (const auto* c = o.if_contains("const")) return *c;
  if (const auto* e = o.if_contains("enum")) return e->as_array()[pick(rng, e->as_array().size())];
  std::string type = "any";
  if (const auto* t = o.if_contains("type")) type = t->is_string() ? std::string(t->as_string()) : std::string(t->as_array()[pick(rng, t->as_array().size())].as_string());
  if (type == "any") return any_value(rng, 2);
  if (type == "null") return nullptr;
  if (type == "boolean") return coin(rng, 50);
  if (type == "number") {
    auto bound = [&](const char* a, const char* b) -> std::optional<double> {
      for (const char* k : {a, b})
        if (const auto* v = o.if_contains(k)) return v->to_number<double>();
      return std::nullopt;
    };
    const auto lo = bound("minimum", "exclusiveMinimum"), hi = bound("maximum", "exclusiveMaximum");
    if (const auto* m = o.if_contains("multipleOf")) {  // n·q, written exactly, then parsed
      const Decimal q = decimal(json::serialize(*m));
      const int64_t k = std::max<int64_t>(0, static_cast<int64_t>(q.digits.size()) - q.point);
      const double step = m->to_number<double>();
      const auto first = static_cast<int64_t>(std::ceil((lo ? *lo : -50.0) / step)), last = static_cast<int64_t>(std::floor((hi ? *hi : 50.0) / step));
      const int64_t n = first + (last >= first ? static_cast<int64_t>(rng() % static_cast<uint64_t>(std::min<int64_t>(last - first + 1, 1000))) : 0);
      std::string digits = std::to_string(std::abs(n) * std::stoll(q.digits)) + std::string(static_cast<std::size_t>(std::max<int64_t>(0, q.point - static_cast<int64_t>(q.digits.size()))), '0');
      if (k > 0) {
        if (static_cast<int64_t>(digits.size()) <= k) digits.insert(0, static_cast<std::size_t>(k + 1 - static_cast<int64_t>(digits.size())), '0');
        digits.insert(digits.size() - static_cast<std::size_t>(k), ".");
      }
      return json::parse((n < 0 ? "-" : "") + digits);
    }
    if (!lo && !hi) return coin(rng, 50) ? json::value(pick(rng, 100000) / 64.0 - 500) : json::value(static_cast<int64_t>(pick(rng, 100)));
    const double a = lo ? *lo : *hi - 10, b = hi ? *hi : *lo + 10;
    double v;
    switch (pick(rng, 4)) {
      case 0: v = a; break;
      case 1: v = b; break;
      case 2: v = a + (b - a) * pick(rng, 9) / 8; break;
      default: v = a + (b - a) * pick(rng, 1000) / 999.0;
    }
    if (v == std::floor(v) && std::abs(v) < 1e15 && coin(rng, 50)) return json::value(static_cast<int64_t>(v));
    return json::value(v);
  }
  if (type == "integer") {
    __int128 lo = -100000, hi = 100000;
    if (const auto* b = o.if_contains("minimum")) lo = b->to_number<int64_t>();
    if (const auto* b = o.if_contains("exclusiveMinimum")) lo = __int128{b->to_number<int64_t>()} + 1;
    if (const auto* b = o.if_contains("maximum")) hi = b->to_number<int64_t>();
    if (const auto* b = o.if_contains("exclusiveMaximum")) hi = __int128{b->to_number<int64_t>()} - 1;
    if (!o.contains("minimum") && !o.contains("exclusiveMinimum")) lo = std::min(lo, hi - 1000);
    if (!o.contains("maximum") && !o.contains("exclusiveMaximum")) hi = std::max(hi, lo + 1000);
    const __int128 span = hi - lo + 1;
    __int128 v = coin(rng, 30) ? (coin(rng, 50) ? lo : hi) : lo + static_cast<__int128>(rng() % static_cast<uint64_t>(std::min<__int128>(span, __int128{1} << 62)));
    if (const auto* m = o.if_contains("multipleOf")) {  // a multiple of the least integer q divides
      const Decimal q = decimal(json::serialize(*m));
      int64_t step = 1;
      while (!multiple_of(decimal(std::to_string(step)), q)) ++step;
      v = v / step * step;
    }
    return json::value(static_cast<int64_t>(v));
  }
  if (type == "string") {
    if (const auto* p = o.if_contains("pattern"); p && coin(rng, 70))
      for (const PatternCase& c : kPatterns)
        if (p->as_string() == c.pattern) return json::value(c.examples[pick(rng, c.examples.size())]);
    const std::size_t lo = o.contains("minLength") ? o.at("minLength").to_number<std::size_t>() : 0;
    const std::size_t hi = o.contains("maxLength") ? o.at("maxLength").to_number<std::size_t>() : lo + 6;
    std::string str;
    for (std::size_t i = 0, n = lo + static_cast<std::size_t>(pick(rng, static_cast<int>(hi - lo + 1))); i < n; ++i) str += kText[pick(rng, std::size(kText))];
    return json::value(str);
  }
  if (type == "array") {
    const std::size_t lo = o.contains("minItems") ? o.at("minItems").to_number<std::size_t>() : 0;
    std::size_t hi = o.contains("maxItems") ? o.at("maxItems").to_number<std::size_t>() : lo + 3;
    const json::array* prefix = o.contains("prefixItems") ? &o.at("prefixItems").as_array() : nullptr;
    const json::value* items = o.if_contains("items");
    if (items && items->is_bool() && !items->get_bool()) hi = std::min(hi, prefix ? prefix->size() : 0);
    if (depth <= 0) hi = lo;
    json::array a;
    const bool unique = o.contains("uniqueItems") && o.at("uniqueItems").as_bool();
    auto dup = [&](const json::value& v) {  // loosely (numbers as doubles): the validator decides
      return std::any_of(a.begin(), a.end(), [&](const json::value& x) {
        return x.is_number() && v.is_number() ? x.to_number<double>() == v.to_number<double>() : x == v;
      });
    };
    for (std::size_t i = 0, n = lo + static_cast<std::size_t>(pick(rng, static_cast<int>(hi >= lo ? hi - lo + 1 : 1))); i < n; ++i) {
      const json::value* sub = prefix && i < prefix->size() ? &(*prefix)[i] : items;
      json::value v = sub ? gen_instance(rng, root, *sub, depth - 1) : any_value(rng, 1);
      for (int tries = 0; unique && dup(v) && tries < 10; ++tries) v = sub ? gen_instance(rng, root, *sub, depth - 1) : any_value(rng, 1);
      if (unique && dup(v)) break;
      a.push_back(std::move(v));
    }
    return a;
  }
  // object
  json::object obj;
  const json::object* props = o.contains("properties") ? &o.at("properties").as_object() : nullptr;
  const json::value* additional = o.if_contains("additionalProperties");
  std::vector<std::string> required;
  if (const auto* r = o.if_contains("required"))
    for (const auto& n : r->as_array()) required.emplace_back(n.as_string());
  if (props)
    for (const auto& kv : *props)
      if (std::find(required.begin(), required.end(), std::string(kv.key())) != required.end() || coin(rng, 50))
        obj[kv.key()] = gen_instance(rng, root, kv.value(), depth - 1);
  for (const auto& r : required)
    if (!obj.contains(r)) obj[r] = additional ? gen_instance(rng, root, *additional, depth - 1) : any_value(rng, 1);
  if (!(additional && additional->is_bool() && !additional->get_bool()))
    for (int i = 0, n = pick(rng, 3); i < n; ++i) {
      std::string k = std::string(kText[pick(rng, std::size(kText))]) + kNames[pick(rng, std::size(kNames))];
      if (props && props->contains(k)) continue;
      obj[k] = additional ? gen_instance(rng, root, *additional, depth - 1) : any_value(rng, 1);
    }
  // Any key order.
  std::vector<const json::key_value_pair*> kvs;
  for (const auto& kv : obj) kvs.push_back(&kv);
  std::shuffle(kvs.begin(), kvs.end(), rng);
  json::object shuffled;
  for (const auto* kv : kvs) shuffled[kv->key()] = kv->value();
  return shuffled;
}

// A value's text with random legal whitespace (runs of at most 3 bytes; none after the end; none
// at all unless `spaces`), and doubles in plain decimal where `plain` (Boost.JSON writes them with
// an exponent, which bounds on numbers refuse).
void write_spaced(Rng& rng, const json::value& v, std::string& out, bool plain = false, bool spaces = true) {
  auto ws = [&] {
    static const char kWs[] = " \t\n\r";
    if (!spaces) return;
    for (int i = 0, n = coin(rng, 40) ? 1 + pick(rng, 3) : 0; i < n; ++i) out += kWs[pick(rng, 4)];
  };
  if (v.is_object()) {
    out += '{';
    ws();
    bool first = true;
    for (const auto& kv : v.as_object()) {
      if (!first) out += ',', ws();
      first = false;
      out += json::serialize(json::value(kv.key()));
      ws();
      out += ':';
      ws();
      write_spaced(rng, kv.value(), out, plain, spaces);
      ws();
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    ws();
    bool first = true;
    for (const auto& e : v.as_array()) {
      if (!first) out += ',', ws();
      first = false;
      write_spaced(rng, e, out, plain, spaces);
      ws();
    }
    out += ']';
  } else if (plain && v.is_double()) {
    char buf[400];
    out.append(buf, std::to_chars(buf, buf + sizeof buf, v.get_double(), std::chars_format::fixed).ptr);
  } else {
    out += json::serialize(v);
  }
}


// Numbers Boost.JSON cannot hold as written (integers past 64 bits become doubles, huge exponents
// are refused), which JSON allows: the validator cannot judge texts with them. (Long fractions it
// judges: it reads bounded numbers' texts.)
bool beyond_boost(std::string_view s) {
  std::size_t run = 0;
  bool fraction = false;  // the digits are a fraction's or an exponent's
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool digit = s[i] >= '0' && s[i] <= '9';
    if (digit && run == 0) fraction = i > 0 && (s[i - 1] == '.' || s[i - 1] == 'e' || s[i - 1] == 'E' || s[i - 1] == '+' ||
                                                (s[i - 1] == '-' && i > 1 && (s[i - 2] == 'e' || s[i - 2] == 'E')));
    run = digit ? run + 1 : 0;
    if (run >= 19 && !fraction) return true;
  }
  boost::system::error_code ec;
  json::parse(s, ec);
  return ec == json::error::exponent_overflow;
}

// Whether some byte goes on from p, or p is complete.
bool not_stuck(const SchemaPrefix& p) {
  if (p.complete()) return true;
  for (int b = 0; b < 256; ++b) {
    SchemaPrefix q = p;
    if (q.feed(static_cast<uint8_t>(b))) return true;
  }
  return false;
}

// The random schemas that compile (a few admit nothing: a required property of schema false...).
struct Case {
  json::value schema;
  std::shared_ptr<const JsonSchema> compiled;
};
std::vector<Case> random_cases(uint64_t seed, int n) {
  Rng rng(seed);
  std::vector<Case> out;
  while (static_cast<int>(out.size()) < n) {
    json::value s = gen_root(rng);
    if (s.as_object().contains("not")) continue;
    try {
      out.push_back({s, compile(json::serialize(s))});
    } catch (const dpa::Error& e) {
      // Only "admits no value" may refuse a generated schema; then the validator must agree on
      // some instances at least not being valid (checked loosely: the message).
      EXPECT_NE(std::string(e.what()).find("admits no value"), std::string::npos) << e.what() << "\n" << json::serialize(s);
    }
  }
  return out;
}

TEST(JsonSchemaDifferential, AgreesWithTheValidator) {
  const std::vector<Case> cases = random_cases(1, 400);
  Rng rng(2);
  int64_t valid_compact = 0, valid_spaced = 0, negatives = 0, recognizer_complete = 0, validator_valid_canonical = 0;
  std::vector<std::string> pool;  // texts of every schema, to try against the others
  // The validator's verdict on a text (nullopt: it cannot judge it).
  auto judge = [](const Case& c, std::string_view text) -> std::optional<bool> {
    boost::system::error_code ec;
    const json::value v = json::parse(text, ec);
    if (ec) return std::nullopt;
    const std::optional<NumberTexts> texts = number_texts(v, text);
    if (!texts) return std::nullopt;
    return Validator{c.schema, &*texts}.valid(c.schema, v);
  };
  for (const Case& c : cases) {
    for (int k = 0; k < 30; ++k) {
      const json::value inst = gen_instance(rng, c.schema, c.schema, 4);
      // Compact as Boost.JSON writes it (doubles with an exponent), compact with doubles in plain
      // decimal, and spaced either way.
      const std::string compact = json::serialize(inst);
      std::string plain, spaced = coin(rng, 30) ? " \n" : "";
      write_spaced(rng, inst, plain, true, false);
      write_spaced(rng, inst, spaced, coin(rng, 50));
      if (beyond_boost(plain) || beyond_boost(spaced)) continue;
      const std::string* const texts[] = {&compact, &plain, &spaced};
      for (const std::string* text : texts) {
        if (text == &plain && plain == compact) continue;
        const std::optional<bool> valid = judge(c, *text);
        ASSERT_TRUE(valid.has_value()) << *text;
        if (!*valid) continue;
        ASSERT_TRUE(accepts(*c.compiled, *text)) << json::serialize(c.schema) << "\n" << *text << "\ntaken "
                                                 << feed_bytes(*c.compiled, *text).taken;
        ++(text == &spaced ? valid_spaced : valid_compact);
        if (text != &spaced) pool.push_back(*text);
      }
    }
  }
  // Other texts: mutations, truncations, other schemas' instances.
  const std::string alphabet = "{}[]\",: -019eE.tfn\\ua\xc3\xa9";
  for (const Case& c : cases) {
    for (int k = 0; k < 150 && !pool.empty(); ++k) {
      std::string s = pool[rng() % pool.size()];
      switch (pick(rng, 5)) {
        case 4: {  // an item again, after itself (a duplicate, for uniqueItems)
          const std::size_t comma = s.find(',', rng() % (s.size() + 1));
          if (comma == std::string::npos) break;
          const std::size_t from = s.find_last_of("[,", comma - 1);
          if (from == std::string::npos || from + 1 >= comma) break;
          s.insert(comma, "," + s.substr(from + 1, comma - from - 1));
          break;
        }
        case 0: s = s.substr(0, rng() % (s.size() + 1)); break;
        case 1: {
          const std::size_t at = rng() % (s.size() + 1);
          s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), alphabet[rng() % alphabet.size()]);
          break;
        }
        case 2:
          if (!s.empty()) s[rng() % s.size()] = alphabet[rng() % alphabet.size()];
          break;
        default: break;  // as it is
      }
      if (beyond_boost(s)) continue;
      ++negatives;
      const Fed f = feed_bytes(*c.compiled, s);
      const bool rec = f.taken == s.size() && f.complete;
      boost::system::error_code ec;
      const json::value v = json::parse(s, ec);
      const bool parsed = !ec;
      const std::optional<bool> valid = judge(c, s);  // none where not parsed, or a key repeats
      if (rec) {
        ++recognizer_complete;
        ASSERT_TRUE(parsed) << s;
        ASSERT_TRUE(valid.has_value()) << s;
        ASSERT_TRUE(*valid) << json::serialize(c.schema) << "\n" << s;
      }
      if (parsed && json::serialize(v) == s && valid.value_or(false)) {
        ++validator_valid_canonical;
        ASSERT_TRUE(rec) << json::serialize(c.schema) << "\n" << s << "\ntaken " << f.taken;
      }
    }
  }
  auto with = [&](const char* k) {
    return static_cast<std::size_t>(std::count_if(cases.begin(), cases.end(), [&](const Case& c) { return json::serialize(c.schema).find(k) != std::string::npos; }));
  };
  std::printf("differential: %zu schemas (%zu with uniqueItems, %zu with multipleOf), %lld valid instances (compact) + %lld (spaced), "
              "%lld other texts (%lld completed by the recognizer, %lld canonical and valid)\n",
              cases.size(), with("uniqueItems"), with("multipleOf"), static_cast<long long>(valid_compact), static_cast<long long>(valid_spaced),
              static_cast<long long>(negatives), static_cast<long long>(recognizer_complete),
              static_cast<long long>(validator_valid_canonical));
  EXPECT_GT(valid_compact, 3000);
  EXPECT_GT(recognizer_complete, 1000);
}

TEST(JsonSchemaDifferential, NoDeadEnds) {
  const std::vector<Case> cases = random_cases(3, 150);
  Rng rng(4);
  int64_t states = 0;
  std::size_t longest = 0;
  for (const Case& c : cases) {
    // Every prefix of valid instances.
    for (int k = 0; k < 3; ++k) {
      const json::value inst = gen_instance(rng, c.schema, c.schema, 3);
      if (!Validator{c.schema}.valid(c.schema, inst)) continue;
      const std::string text = json::serialize(inst);
      SchemaPrefix p(*c.compiled);
      for (char ch : text) {
        ASSERT_TRUE(p.feed(static_cast<uint8_t>(ch)));
        ASSERT_TRUE(not_stuck(p)) << json::serialize(c.schema) << "\n" << text;
        ++states;
      }
    }
    // Random walks over all 256 bytes, then biased to close: each must end complete.
    static const std::string kClosing = "\"}],:0123456789ntf-[{";
    for (int walk = 0; walk < 4; ++walk) {
      SchemaPrefix p(*c.compiled);
      std::string text;
      const int wander = pick(rng, 40);
      std::size_t steps = 0;
      for (; steps < 20000 && !(p.complete() && static_cast<int>(steps) >= wander); ++steps) {
        std::vector<uint8_t> ok;
        for (int b = 0; b < 256; ++b) {
          SchemaPrefix q = p;
          if (q.feed(static_cast<uint8_t>(b))) ok.push_back(static_cast<uint8_t>(b));
        }
        ++states;
        if (ok.empty()) {
          ASSERT_TRUE(p.complete()) << json::serialize(c.schema) << "\nstuck after: " << text;
          break;
        }
        uint8_t b = ok[rng() % ok.size()];
        if (static_cast<int>(steps) >= wander && coin(rng, 85))
          for (char want : kClosing)
            if (std::find(ok.begin(), ok.end(), static_cast<uint8_t>(want)) != ok.end()) {
              b = static_cast<uint8_t>(want);
              break;
            }
        ASSERT_TRUE(p.feed(b));
        text += static_cast<char>(b);
      }
      ASSERT_TRUE(p.complete()) << json::serialize(c.schema) << "\nnot closed in 20000 bytes: " << text.substr(0, 400);
      longest = std::max(longest, steps);
      // What the walk wrote is valid JSON that the validator accepts.
      if (beyond_boost(text)) continue;
      boost::system::error_code ec;
      const json::value v = json::parse(text, ec);
      ASSERT_FALSE(ec) << text;
      const std::optional<NumberTexts> texts = number_texts(v, text);
      ASSERT_TRUE(texts.has_value()) << text;
      ASSERT_TRUE((Validator{c.schema, &*texts}.valid(c.schema, v))) << json::serialize(c.schema) << "\n" << text;
    }
  }
  std::printf("no dead ends: %lld states checked over %zu schemas; longest closing walk %zu bytes\n",
              static_cast<long long>(states), cases.size(), longest);
}

// uniqueItems, exhaustively: every text of up to `len` bytes over a small alphabet (those Boost.JSON's
// incremental parser does not refuse as JSON, and one byte past each), for a handful of schemas.
// The recognizer completes exactly the texts the validator above says conform (it parses them
// and compares the items itself); and every prefix the recognizer takes is completed by a bounded
// search whose text the validator accepts. Together: within the length, the recognizer takes a
// prefix iff some conforming text continues it.
TEST(JsonSchemaUniqueItems, AllShortTexts) {
  struct Case {
    const char* schema;
    std::string alphabet;
    std::size_t len;
  };
  const Case cases[] = {
      {R"({"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true})", "[]\",ab", 9},
      {R"({"type": "array", "items": {"type": "string", "maxLength": 1}, "uniqueItems": true})", "[]\",ab", 9},
      {R"({"type": "array", "items": {"type": "string", "maxLength": 1}, "uniqueItems": true})", "[]\",\\/", 10},
      {R"({"type": "array", "items": {"type": "string", "maxLength": 0}, "uniqueItems": true, "minItems": 1})", "[]\", ", 7},
      {R"({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 2}, "uniqueItems": true})", "[],012-", 7},
      {R"({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 12}, "uniqueItems": true, "minItems": 2})", "[],12", 9},
      {R"({"type": "array", "items": {"type": "integer"}, "uniqueItems": true})", "[],01-", 8},
      {R"({"type": "array", "items": {"type": "number"}, "uniqueItems": true})", "[],01.e-", 7},
      {R"({"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "uniqueItems": true})", "[],01.-", 8},
      {R"({"type": "array", "items": {"anyOf": [{"enum": [1]}, {"type": "integer", "minimum": 1, "maximum": 2}]}, "uniqueItems": true, "minItems": 2})",
       "[],12 ", 7},
      {R"({"type": "array", "items": {"enum": [0, 1, 10]}, "uniqueItems": true, "maxItems": 2})", "[],01", 8},
      {R"({"type": "array", "items": {"type": ["integer", "string"], "maxLength": 0, "minimum": 0, "maximum": 1}, "uniqueItems": true, "minItems": 3})",
       "[]\",01", 9},
  };
  int64_t texts = 0, valid = 0, taken = 0;
  for (const Case& c : cases) {
    const json::value schema = json::parse(c.schema);
    const auto compiled = compile(c.schema);
    auto conforms = [&](const std::string& text) {
      if (text.empty() || is_ws(text.back())) return false;  // the recognizer takes no whitespace after the value
      boost::system::error_code ec;
      const json::value v = json::parse(text, ec);
      if (ec) return false;
      const std::optional<NumberTexts> numbers = number_texts(v, text);
      return numbers && Validator{schema, &*numbers}.valid(schema, v);
    };
    auto json_prefix = [](const std::string& text) {
      json::stream_parser p;
      boost::system::error_code ec;
      p.write(text.data(), text.size(), ec);
      return !ec;
    };
    int64_t case_valid = 0;
    std::vector<std::pair<std::string, std::optional<SchemaPrefix>>> todo;
    todo.emplace_back("", SchemaPrefix(*compiled));
    while (!todo.empty()) {
      auto [text, state] = std::move(todo.back());
      todo.pop_back();
      for (char ch : c.alphabet) {
        const std::string next = text + ch;
        std::optional<SchemaPrefix> p = state;
        if (p && !p->feed(static_cast<uint8_t>(ch))) p.reset();
        ++texts;
        const bool ok = conforms(next);
        case_valid += ok;
        ASSERT_EQ(p && p->complete(), ok) << c.schema << "\n" << next;
        if (p) {
          ++taken;
          std::string found;
          int budget = 20000;
          ASSERT_TRUE(dpa::engine::test::completion(*p, found, budget)) << c.schema << "\n" << next;
          ASSERT_TRUE(conforms(next + found)) << c.schema << "\n" << next << " + " << found;
        }
        // Past a prefix that no JSON text has, nothing conforms: the recognizer took none of it.
        if (!json_prefix(next)) {
          ASSERT_FALSE(p.has_value()) << c.schema << "\n" << next;
          continue;
        }
        if (next.size() < c.len) todo.emplace_back(next, p);
      }
    }
    EXPECT_GT(case_valid, 0) << c.schema;
    valid += case_valid;
  }
  std::printf("uniqueItems: %lld short texts, %lld conforming; %lld taken prefixes completed and judged\n",
              static_cast<long long>(texts), static_cast<long long>(valid), static_cast<long long>(taken));
}

}  // namespace
