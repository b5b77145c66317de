// The JSON Schema recognizer against an independent validator written here over Boost.JSON's
// values: random schemas of the supported subset, random instances of them (valid ones serialized
// compactly and with random whitespace, then mutated, truncated, swapped between schemas), with
// both directions checked; no dead ends on random walks; hand-written cases; and the token trie's
// allowed set against feeding each token alone.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/json_schema.h"
#include "engine/structured_output.h"

namespace {
namespace json = boost::json;
using dpa::engine::JsonSchema;
using dpa::engine::mask_allows;
using dpa::engine::SchemaPrefix;
using dpa::engine::TokenTrie;

// ---------------------------------------------------------------------------------------------
// The validator: JSON Schema semantics for the subset, over parsed values.

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xc0) != 0x80;
  return n;
}

struct Validator {
  const json::value& root;

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

  static bool number_at_least(const json::value& v, const json::value& b, bool strict) {
    // Integers exactly, through long double otherwise (the tests' bounds and values are small).
    if ((v.is_int64() || v.is_uint64()) && (b.is_int64() || b.is_uint64())) {
      const __int128 x = v.is_int64() ? __int128{v.get_int64()} : __int128{v.get_uint64()};
      const __int128 y = b.is_int64() ? __int128{b.get_int64()} : __int128{b.get_uint64()};
      return strict ? x > y : x >= y;
    }
    const long double x = v.to_number<long double>(), y = b.to_number<long double>();
    return strict ? x > y : x >= y;
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
    if (const auto* c = o.if_contains("const"); c && *c != v) return false;
    if (const auto* e = o.if_contains("enum"); e && std::find(e->as_array().begin(), e->as_array().end(), v) == e->as_array().end())
      return false;
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
    if (v.is_number()) {
      if (const auto* b = o.if_contains("minimum"); b && !number_at_least(v, *b, false)) return false;
      if (const auto* b = o.if_contains("exclusiveMinimum"); b && !number_at_least(v, *b, true)) return false;
      if (const auto* b = o.if_contains("maximum"); b && number_at_least(v, *b, true)) return false;
      if (const auto* b = o.if_contains("exclusiveMaximum"); b && number_at_least(v, *b, false)) return false;
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
  return s;
}

json::value gen_schema(Rng& rng, int depth, int n_defs) {
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
    case 2: return json::object{{"type", coin(rng, 50) ? "number" : "boolean"}};
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
  if (type == "number") return coin(rng, 50) ? json::value(pick(rng, 100000) / 64.0 - 500) : json::value(static_cast<int64_t>(pick(rng, 100)));
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
    for (std::size_t i = 0, n = lo + static_cast<std::size_t>(pick(rng, static_cast<int>(hi >= lo ? hi - lo + 1 : 1))); i < n; ++i) {
      const json::value* sub = prefix && i < prefix->size() ? &(*prefix)[i] : items;
      a.push_back(sub ? gen_instance(rng, root, *sub, depth - 1) : any_value(rng, 1));
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

// A value's text with random legal whitespace (runs of at most 3 bytes; none after the end).
void write_spaced(Rng& rng, const json::value& v, std::string& out) {
  auto ws = [&] {
    static const char kWs[] = " \t\n\r";
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
      write_spaced(rng, kv.value(), out);
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
      write_spaced(rng, e, out);
      ws();
    }
    out += ']';
  } else {
    out += json::serialize(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Feeding.

struct Fed {
  std::size_t taken = 0;
  bool complete = false;
};
Fed feed_bytes(const JsonSchema& s, std::string_view text) {
  SchemaPrefix p(s);
  Fed f;
  for (char c : text) {
    if (!p.feed(static_cast<uint8_t>(c))) return f;
    ++f.taken;
  }
  f.complete = p.complete();
  return f;
}
bool accepts(const JsonSchema& s, std::string_view text) {
  const Fed f = feed_bytes(s, text);
  return f.taken == text.size() && f.complete;
}
std::shared_ptr<const JsonSchema> compile(std::string_view text) { return JsonSchema::compile(text); }

// Numbers Boost.JSON cannot hold as written (integers past 64 bits become doubles, huge exponents
// are refused), which JSON allows: the validator cannot judge texts with them.
bool beyond_boost(std::string_view s) {
  std::size_t run = 0;
  for (char c : s) {
    run = c >= '0' && c <= '9' ? run + 1 : 0;
    if (run >= 19) return true;
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
  for (const Case& c : cases) {
    const Validator val{c.schema};
    for (int k = 0; k < 30; ++k) {
      const json::value inst = gen_instance(rng, c.schema, c.schema, 4);
      if (!val.valid(c.schema, inst)) continue;
      const std::string compact = json::serialize(inst);
      ASSERT_TRUE(accepts(*c.compiled, compact)) << json::serialize(c.schema) << "\n" << compact << "\ntaken "
                                                 << feed_bytes(*c.compiled, compact).taken;
      ++valid_compact;
      std::string spaced = coin(rng, 30) ? " \n" : "";
      write_spaced(rng, inst, spaced);
      ASSERT_TRUE(accepts(*c.compiled, spaced)) << json::serialize(c.schema) << "\n" << spaced;
      ++valid_spaced;
      pool.push_back(compact);
    }
  }
  // Other texts: mutations, truncations, other schemas' instances.
  const std::string alphabet = "{}[]\",: -019eE.tfn\\ua\xc3\xa9";
  for (const Case& c : cases) {
    const Validator val{c.schema};
    for (int k = 0; k < 150 && !pool.empty(); ++k) {
      std::string s = pool[rng() % pool.size()];
      switch (pick(rng, 4)) {
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
      if (rec) {
        ++recognizer_complete;
        ASSERT_TRUE(parsed) << s;
        ASSERT_TRUE(val.valid(c.schema, v)) << json::serialize(c.schema) << "\n" << s;
      }
      if (parsed && json::serialize(v) == s && val.valid(c.schema, v)) {
        ++validator_valid_canonical;
        ASSERT_TRUE(rec) << json::serialize(c.schema) << "\n" << s << "\ntaken " << f.taken;
      }
    }
  }
  std::printf("differential: %zu schemas, %lld valid instances (compact) + %lld (spaced), %lld other texts "
              "(%lld completed by the recognizer, %lld canonical and valid)\n",
              cases.size(), static_cast<long long>(valid_compact), static_cast<long long>(valid_spaced),
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
      ASSERT_TRUE(Validator{c.schema}.valid(c.schema, v)) << json::serialize(c.schema) << "\n" << text;
    }
  }
  std::printf("no dead ends: %lld states checked over %zu schemas; longest closing walk %zu bytes\n",
              static_cast<long long>(states), cases.size(), longest);
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases.

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
