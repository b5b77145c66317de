// The schema compiler and the recognizer of json_schema.h.
//
// The recognizer keeps one parse per way the text so far can be read (a stack of open containers
// and the lexical state of the innermost value). Parses split where a value starts and several
// branches of its schema take the first byte (anyOf, a type list, enum values); an object key is
// matched against the declared names and as an undeclared key in one parse, since the key is
// known once its closing quote comes. After each byte the parses that refused it end and equal
// ones merge. Each parse on its own never reaches a dead end (a container or key is begun only if
// something conforming fits in it within the depth limit, a digit only if some completion lies
// within the bounds), so dropping parses past kMaxAlternatives loses some texts but never leaves
// the recognizer stuck; refusing the byte instead could, when it is the only way on.
#include "engine/json_schema.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "core/error.h"
#include "engine/compile_cache.h"
#include "engine/regex.h"

namespace dpa::engine {
namespace {

namespace json = boost::json;
using i128 = __int128;

// Type bits of Node::types. kNumber admits every JSON number, kInteger those with neither
// fraction nor exponent.
enum Type : uint8_t { kNull = 1, kBool = 2, kObject = 4, kArray = 8, kStr = 16, kInteger = 32, kNumber = 64 };
constexpr uint8_t kAllTypes = 127;

enum Phase : uint8_t {
  kValue,       // before a value of `node` (the text's start too): whitespace or its first byte
  kObjFirst,    // after '{': whitespace, a key or '}'
  kObjKey,      // after ',' in an object: whitespace or a key
  kColon,       // after a key (`node` is its value's schema): whitespace or ':'
  kArrFirst,    // after '[': whitespace, an item or ']'
  kAfterValue,  // after a value in a container: whitespace, ',' or the closer
  kString,      // in a string (a key when flags has kKey)
  kEscape,      // after '\'
  kUnicode,     // in \uXXXX, hex_left digits to go
  kNumMinus, kNumZero, kNumInt, kNumDot, kNumFrac, kNumE, kNumEsign, kNumExp,  // as JsonPrefix's
  kLiteral,     // in true / false / null
  kChoice,      // in an enum value: candidates [lo, hi) of its texts, `at` bytes matched
  kDone,        // the top-level value is whole
};
enum Kind : uint8_t { kObjFrame, kArrFrame, kKeyFrame };
enum Flag : uint8_t { kKey = 1, kLowNeeded = 2, kNeg = 4 };
constexpr uint64_t kFnvBasis = 14695981039346656037ull, kFnvPrime = 1099511628211ull;

// A UTF-8 lead byte (RFC 3629: no overlong forms, surrogates or values past U+10FFFF): sets the
// continuation bytes to go and the next one's range; false for a byte that cannot lead.
template <typename Top>
bool utf8_lead(Top& t, uint8_t c) {
  if (c >= 0xc2 && c <= 0xdf) t.utf8_left = 1;
  else if (c == 0xe0) t.utf8_left = 2, t.utf8_lo = 0xa0;
  else if (c == 0xed) t.utf8_left = 2, t.utf8_hi = 0x9f;
  else if (c >= 0xe1 && c <= 0xef) t.utf8_left = 2;
  else if (c == 0xf0) t.utf8_left = 3, t.utf8_lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) t.utf8_left = 3;
  else if (c == 0xf4) t.utf8_left = 3, t.utf8_hi = 0x8f;
  else return false;
  return true;
}
template <typename Top>
bool utf8_continuation(Top& t, uint8_t c) {
  if (c < t.utf8_lo || c > t.utf8_hi) return false;
  --t.utf8_left, t.utf8_lo = 0x80, t.utf8_hi = 0xbf;
  return true;
}

// Narrows the sorted texts [lo, hi), which share their first `at` bytes, to those whose next byte
// is c (a run, as in ChoicePrefix).
void narrow(const std::vector<std::string>& texts, uint32_t& lo, uint32_t& hi, uint32_t at, uint8_t c) {
  auto next = [&](uint32_t i) { return texts[i].size() > at ? static_cast<int>(static_cast<uint8_t>(texts[i][at])) : -1; };
  while (lo < hi && next(lo) < c) ++lo;
  uint32_t end = lo;
  while (end < hi && next(end) == c) ++end;
  hi = end;
}

std::string pointer_token(std::string_view key) {  // RFC 6901 escaping, for error paths
  std::string s;
  for (char c : key) {
    if (c == '~') s += "~0";
    else if (c == '/') s += "~1";
    else s += c;
  }
  return s;
}

// The containers nested in a value, it included.
uint8_t nesting(const json::value& v) {
  std::size_t d = 0;
  if (v.is_object())
    for (const auto& kv : v.as_object()) d = std::max<std::size_t>(d, nesting(kv.value()));
  else if (v.is_array())
    for (const auto& e : v.as_array()) d = std::max<std::size_t>(d, nesting(e));
  else
    return 0;
  return static_cast<uint8_t>(std::min<std::size_t>(d + 1, 255));
}

// A name's canonical encoding: as Boost.JSON serializes it, less the quotes.
std::string canonical_name(std::string_view name) {
  const std::string s = json::serialize(json::value(json::string(name)));
  return s.substr(1, s.size() - 2);
}

bool is_annotation(std::string_view k) {
  // `format` is an annotation in 2020-12 unless the format-assertion vocabulary is on.
  static constexpr std::string_view kAnnotations[] = {"title",      "description", "default",    "examples",
                                                      "$schema",    "$id",         "$comment",   "deprecated",
                                                      "readOnly",   "writeOnly",   "format"};
  return std::find(std::begin(kAnnotations), std::end(kAnnotations), k) != std::end(kAnnotations);
}

}  // namespace

// Builds the node graph from the document: one node per subschema reached (memoized by its
// address in the document, so $ref cycles close), then the leaves and least depths.
class SchemaCompiler {
 public:
  SchemaCompiler(JsonSchema& s, const json::value& doc) : s_(s), doc_(doc) {}

  uint32_t node(const json::value& v, const std::string& path) {
    if (auto it = memo_.find(&v); it != memo_.end()) return it->second;
    if (s_.nodes_.size() >= JsonSchema::kMaxNodes + 2) fail(path, "more than 4096 subschemas are not supported");
    const auto id = static_cast<uint32_t>(s_.nodes_.size());
    s_.nodes_.emplace_back();
    memo_[&v] = id;
    JsonSchema::Node n = build(v, path);  // recursion appends to nodes_: fill a copy, then store it
    s_.nodes_[id] = std::move(n);
    return id;
  }

  void finish() {
    auto& nodes = s_.nodes_;
    // Leaves: the nodes reached through $ref and anyOf edges that are neither.
    std::vector<char> seen(nodes.size());
    std::vector<uint32_t> todo;
    for (uint32_t i = 0; i < nodes.size(); ++i) {
      std::fill(seen.begin(), seen.end(), 0);
      todo.assign(1, i);
      seen[i] = 1;
      std::vector<uint32_t> leaves;
      while (!todo.empty()) {
        const uint32_t j = todo.back();
        todo.pop_back();
        const JsonSchema::Node& n = nodes[j];
        std::vector<uint32_t> next = n.any_of;
        if (n.alias >= 0) next.push_back(static_cast<uint32_t>(n.alias));
        if (n.alias < 0 && n.any_of.empty()) {
          if (n.types != 0 || !n.enum_text.empty()) leaves.push_back(j);
          continue;
        }
        for (uint32_t k : next)
          if (!seen[k]) seen[k] = 1, todo.push_back(k);
      }
      std::sort(leaves.begin(), leaves.end());
      nodes[i].leaves = std::move(leaves);
    }
    // Least depths: a fixpoint from "none", each round lowering what the others' allow.
    constexpr uint8_t kNone = JsonSchema::kNoWitness;
    auto cap = [](std::size_t d) { return d > SchemaPrefix::kMaxDepth ? kNone : static_cast<uint8_t>(d); };
    for (bool changed = true; changed;) {
      changed = false;
      for (auto& n : nodes) {
        if (n.alias >= 0 || !n.any_of.empty()) continue;
        uint8_t obj = kNone, arr = kNone, any = kNone;
        if (n.types & kObject) {
          std::size_t d = 1;
          for (std::size_t k = 0; k < n.names.size(); ++k)
            if ((n.required >> k) & 1) d = std::max<std::size_t>(d, 1 + std::size_t{nodes[n.props[k]].min_depth});
          obj = cap(d);
        }
        if (n.types & kArray) {
          std::size_t d = 1;
          for (uint64_t k = 0; k < n.min_items && k <= n.prefix_items.size(); ++k)
            d = std::max<std::size_t>(d, 1 + std::size_t{nodes[n.item(k)].min_depth});
          arr = cap(d);
        }
        if (n.types & (kNull | kBool | kStr | kInteger | kNumber)) any = 0;
        for (uint8_t d : n.enum_depth) any = std::min(any, cap(d));
        any = std::min({any, obj, arr});
        if (obj != n.min_depth_object || arr != n.min_depth_array || any != n.min_depth) changed = true;
        n.min_depth_object = obj, n.min_depth_array = arr, n.min_depth = any;
      }
      for (auto& n : nodes) {
        if (n.alias < 0 && n.any_of.empty()) continue;
        uint8_t d = kNone;
        for (uint32_t l : n.leaves) d = std::min(d, nodes[l].min_depth);
        if (d != n.min_depth) changed = true;
        n.min_depth = d;
      }
    }
  }

 private:
  [[noreturn]] static void fail(const std::string& path, const std::string& why) { throw Error(why + " (at " + path + ")"); }

  static uint64_t count(const json::value& v, const std::string& path) {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<uint64_t>(v.get_int64());
    if (v.is_double() && v.get_double() >= 0 && v.get_double() == std::floor(v.get_double()))
      return v.get_double() >= 1.8e19 ? UINT64_MAX : static_cast<uint64_t>(v.get_double());
    fail(path, "must be a non-negative integer");
  }

  // floor or ceil of a JSON number, clamped just past the int64 range.
  static i128 rounded(const json::value& v, bool up, const std::string& path) {
    constexpr i128 kBelow = i128{INT64_MIN} - 1, kAbove = i128{INT64_MAX} + 1;
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64()) return std::min<i128>(v.get_uint64(), kAbove);
    if (!v.is_double()) fail(path, "must be a number");
    const double d = v.get_double();
    if (!(d > -9.3e18)) return kBelow;
    if (!(d < 9.3e18)) return kAbove;
    return static_cast<i128>(up ? std::ceil(d) : std::floor(d));
  }

  std::string ref_target(const std::string& ref, const std::string& path, const json::value** target) {
    if (ref.empty() || ref[0] != '#')
      fail(path, "$ref '" + ref + "' is not supported: only local references ('#' or '#/json/pointer') are");
    std::string pointer;  // the fragment, percent-decoded (RFC 3986)
    for (std::size_t i = 1; i < ref.size(); ++i) {
      if (ref[i] == '%' && i + 2 < ref.size() && hex_value(static_cast<uint8_t>(ref[i + 1])) >= 0 &&
          hex_value(static_cast<uint8_t>(ref[i + 2])) >= 0) {
        pointer += static_cast<char>(hex_value(static_cast<uint8_t>(ref[i + 1])) * 16 + hex_value(static_cast<uint8_t>(ref[i + 2])));
        i += 2;
      } else {
        pointer += ref[i];
      }
    }
    if (pointer.empty()) {
      *target = &doc_;
      return "#";
    }
    if (pointer[0] != '/') fail(path, "$ref '" + ref + "' is not supported: anchors are not, JSON pointers ('#/...') are");
    boost::system::error_code ec;
    *target = doc_.find_pointer(pointer, ec);
    if (!*target) fail(path, "$ref '" + ref + "' points to nothing in the schema");
    return "#" + pointer;
  }

  JsonSchema::Node build(const json::value& v, const std::string& path) {
    JsonSchema::Node n;
    if (v.is_bool()) {
      n.types = v.get_bool() ? kAllTypes : 0;
      return n;
    }
    if (!v.is_object()) fail(path, "a schema must be an object or a boolean");
    std::map<std::string_view, const json::value*> kw;  // the assertions
    for (const auto& kv : v.as_object()) {
      const std::string_view k = kv.key();
      const std::string p = path + "/" + pointer_token(k);
      if (is_annotation(k)) continue;
      if (k == "$defs" || k == "definitions") {  // compiled for their errors; reached through $ref
        if (!kv.value().is_object()) fail(p, "'" + std::string(k) + "' must be an object");
        for (const auto& d : kv.value().as_object()) node(d.value(), p + "/" + pointer_token(d.key()));
        continue;
      }
      static constexpr std::string_view kKnown[] = {
          "type",     "enum",     "const",     "properties", "required",  "additionalProperties",
          "items",    "prefixItems", "minItems", "maxItems", "minLength", "maxLength",
          "minimum",  "maximum",  "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "$ref",
          "pattern"};
      if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
        fail(p, "unsupported keyword '" + std::string(k) + "'");
      kw[k] = &kv.value();
    }
    auto at = [&](std::string_view k) { return path + "/" + pointer_token(k); };
    auto only = [&](std::string_view k, std::initializer_list<std::string_view> also) {
      for (const auto& [other, _] : kw)
        if (other != k && std::find(also.begin(), also.end(), other) == also.end())
          fail(path, "'" + std::string(k) + "' together with '" + std::string(other) + "' is not supported");
    };

    // Aliases and alternatives stand alone.
    if (kw.count("$ref") || kw.count("allOf")) {
      const std::string_view k = kw.count("$ref") ? "$ref" : "allOf";
      only(k, {});
      const json::value& r = *kw[k];
      if (k == "$ref") {
        if (!r.is_string()) fail(at(k), "'$ref' must be a string");
        const json::value* target = nullptr;
        const std::string tp = ref_target(std::string(r.get_string()), at(k), &target);
        n.alias = node(*target, tp);
      } else {
        if (!r.is_array() || r.as_array().size() != 1) fail(at(k), "'allOf' is supported with exactly one schema only");
        n.alias = node(r.as_array()[0], at(k) + "/0");
      }
      return n;
    }
    if (kw.count("anyOf") || kw.count("oneOf")) {
      const std::string_view k = kw.count("anyOf") ? "anyOf" : "oneOf";
      only(k, {});
      const json::value& a = *kw[k];
      if (!a.is_array() || a.as_array().empty()) fail(at(k), "'" + std::string(k) + "' must be a non-empty array of schemas");
      for (std::size_t i = 0; i < a.as_array().size(); ++i) n.any_of.push_back(node(a.as_array()[i], at(k) + "/" + std::to_string(i)));
      return n;
    }

    n.types = kAllTypes;
    if (const auto it = kw.find("type"); it != kw.end()) {
      n.types = 0;
      auto add = [&](const json::value& t) {
        static constexpr std::pair<std::string_view, uint8_t> kNames[] = {
            {"null", kNull}, {"boolean", kBool}, {"object", kObject}, {"array", kArray},
            {"string", kStr}, {"integer", kInteger}, {"number", kNumber | kInteger}};
        if (t.is_string())
          for (const auto& [name, bit] : kNames)
            if (t.get_string() == name) {
              n.types |= bit;
              return;
            }
        fail(at("type"), "'type' must be one of null, boolean, object, array, string, integer, number (or a list of them)");
      };
      if (it->second->is_array())
        for (const auto& t : it->second->as_array()) add(t);
      else
        add(*it->second);
    }

    if (kw.count("enum") || kw.count("const")) {
      only(kw.count("enum") ? "enum" : "const", {"enum", "const", "type"});
      std::vector<const json::value*> values;
      if (kw.count("enum")) {
        if (!kw["enum"]->is_array()) fail(at("enum"), "'enum' must be an array");
        for (const auto& e : kw["enum"]->as_array()) values.push_back(&e);
        if (kw.count("const")) std::erase_if(values, [&](const json::value* e) { return *e != *kw["const"]; });
      } else {
        values.push_back(kw["const"]);
      }
      std::vector<std::pair<std::string, uint8_t>> texts;
      for (const json::value* e : values) {
        const uint8_t kind = e->is_null() ? kNull : e->is_bool() ? kBool : e->is_object() ? kObject : e->is_array() ? kArray
                             : e->is_string() ? kStr : e->is_double() ? kNumber : (kInteger | kNumber);
        if (e->is_double() && !std::isfinite(e->get_double())) fail(path, "an enum/const number is out of range");
        if (kind & n.types) texts.emplace_back(json::serialize(*e), nesting(*e));
      }
      std::sort(texts.begin(), texts.end());
      texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
      n.types = 0, n.is_enum = true;
      for (auto& [text, depth] : texts) n.enum_text.push_back(std::move(text)), n.enum_depth.push_back(depth);
      return n;
    }

    // Objects.
    n.additional = 0;  // the schema `true`
    if (kw.count("additionalProperties")) n.additional = node(*kw["additionalProperties"], at("additionalProperties"));
    std::vector<std::pair<std::string, uint32_t>> props;
    if (kw.count("properties")) {
      if (!kw["properties"]->is_object()) fail(at("properties"), "'properties' must be an object");
      for (const auto& p : kw["properties"]->as_object())
        props.emplace_back(canonical_name(p.key()), node(p.value(), at("properties") + "/" + pointer_token(p.key())));
    }
    std::vector<std::string> required;
    if (kw.count("required")) {
      if (!kw["required"]->is_array()) fail(at("required"), "'required' must be an array of strings");
      for (const auto& r : kw["required"]->as_array()) {
        if (!r.is_string()) fail(at("required"), "'required' must be an array of strings");
        required.push_back(canonical_name(r.get_string()));
        // A required name not declared is one whose value takes additionalProperties' schema.
        if (std::none_of(props.begin(), props.end(), [&](const auto& p) { return p.first == required.back(); }))
          props.emplace_back(required.back(), n.additional);
      }
    }
    if (props.size() > 64) fail(at("properties"), "more than 64 properties in one object schema are not supported");
    std::sort(props.begin(), props.end());
    for (std::size_t i = 0; i < props.size(); ++i) {
      n.names.push_back(props[i].first), n.props.push_back(props[i].second);
      if (std::find(required.begin(), required.end(), props[i].first) != required.end()) n.required |= uint64_t{1} << i;
    }

    // Arrays.
    if (kw.count("items")) {
      if (kw["items"]->is_array()) fail(at("items"), "'items' as an array is not supported: use 'prefixItems'");
      n.items = node(*kw["items"], at("items"));
    }
    if (kw.count("prefixItems")) {
      const json::value& p = *kw["prefixItems"];
      if (!p.is_array()) fail(at("prefixItems"), "'prefixItems' must be an array of schemas");
      for (std::size_t i = 0; i < p.as_array().size(); ++i)
        n.prefix_items.push_back(node(p.as_array()[i], at("prefixItems") + "/" + std::to_string(i)));
    }
    if (kw.count("minItems")) n.min_items = count(*kw["minItems"], at("minItems"));
    if (kw.count("maxItems")) n.max_items = count(*kw["maxItems"], at("maxItems"));
    if (n.min_items > n.max_items) n.types &= ~kArray;

    // Strings.
    if (kw.count("minLength")) n.min_length = count(*kw["minLength"], at("minLength"));
    if (kw.count("maxLength")) n.max_length = count(*kw["maxLength"], at("maxLength"));
    if (n.min_length > n.max_length) n.types &= ~kStr;
    if (kw.count("pattern")) {
      if (!kw["pattern"]->is_string()) fail(at("pattern"), "'pattern' must be a string");
      if (kw.count("minLength") || kw.count("maxLength"))
        fail(at("pattern"), "'pattern' beside 'minLength' or 'maxLength' is not supported: put the length in the pattern");
      n.pattern = pattern(std::string(kw["pattern"]->get_string()), at("pattern"));
    }

    // Integers. Bounds on numbers with fractions would need the decimal expansion's prefixes
    // checked against them (1.99999 may still approach a maximum of 2); only integers are done.
    i128 lo = INT64_MIN, hi = INT64_MAX;
    for (std::string_view k : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      if (!kw.count(k)) continue;
      if (n.types & kNumber & ~kInteger)
        fail(at(k), "minimum/maximum on type number is not supported (they are on type integer)");
      const json::value& b = *kw[k];
      if (k == "minimum") lo = std::max(lo, rounded(b, true, at(k)));
      else if (k == "exclusiveMinimum") lo = std::max(lo, rounded(b, false, at(k)) + 1);
      else if (k == "maximum") hi = std::min(hi, rounded(b, false, at(k)));
      else hi = std::min(hi, rounded(b, true, at(k)) - 1);
      n.bounded = true;
    }
    if (lo > hi) n.types &= ~kInteger;
    else n.lo = static_cast<int64_t>(lo), n.hi = static_cast<int64_t>(hi);
    return n;
  }

  JsonSchema& s_;
  const json::value& doc_;
  std::map<const json::value*, uint32_t> memo_;
  std::map<std::string, std::shared_ptr<const Regex>> patterns_;  // by text: each compiled once

  // JSON Schema's pattern is a search (ECMA-262: it may match anywhere in the string): the DFA
  // takes any text around it, unless a leading ^ or a trailing (unescaped) $ anchors that end.
  std::shared_ptr<const Regex> pattern(const std::string& text, const std::string& path) {
    if (auto it = patterns_.find(text); it != patterns_.end()) return it->second;
    if (patterns_.size() >= JsonSchema::kMaxPatterns)
      fail(path, "more than " + std::to_string(JsonSchema::kMaxPatterns) + " distinct patterns are not supported");
    std::string_view body = text;
    const bool head = !body.empty() && body.front() == '^';
    if (head) body.remove_prefix(1);
    std::size_t slashes = 0;
    while (body.size() > slashes + 1 && body[body.size() - 2 - slashes] == '\\') ++slashes;
    const bool tail = !body.empty() && body.back() == '$' && slashes % 2 == 0;
    if (tail) body.remove_suffix(1);
    const std::string any = "[\\s\\S]*";
    const std::string full = (head ? "" : any) + "(?:" + std::string(body) + ")" + (tail ? "" : any);
    try {
      return patterns_[text] = Regex::compile(full, Regex::Target::json_string);
    } catch (const Error& e) {
      fail(path, std::string("'pattern' ") + text + ", read as " + full + ": " + e.what());
    }
  }
};

std::size_t JsonSchema::bytes() const {
  std::size_t n = sizeof(JsonSchema) + nodes_.capacity() * sizeof(Node);
  std::set<const Regex*> patterns;  // shared by the nodes that name the same text
  for (const Node& v : nodes_) {
    n += (v.leaves.capacity() + v.any_of.capacity() + v.props.capacity() + v.prefix_items.capacity()) * 4 +
         v.enum_depth.capacity();
    for (const auto& t : v.enum_text) n += sizeof t + t.capacity();
    for (const auto& t : v.names) n += sizeof t + t.capacity();
    if (v.pattern && patterns.insert(v.pattern.get()).second) n += v.pattern->bytes();
  }
  return n;
}

std::shared_ptr<const JsonSchema> JsonSchema::compile_cached(std::string_view schema_json) {
  // At most 64 MiB of schemas and 1,024 texts.
  static CompileCache<JsonSchema> cache(1024, 64u << 20);
  if (schema_json.size() > kMaxText) return compile(schema_json);  // refused at once; not kept
  return cache.get(std::string(schema_json), [&] { return compile(schema_json); },
                   [](const JsonSchema& s) { return s.bytes(); });
}

std::shared_ptr<const JsonSchema> JsonSchema::compile(std::string_view schema_json) {
  if (schema_json.size() > kMaxText) throw Error("the schema is larger than 64 KiB");
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 1000;
  const json::value doc = json::parse(schema_json, ec, {}, opt);
  if (ec) throw Error("the schema is not valid JSON: " + ec.message());
  auto s = std::make_shared<JsonSchema>();
  s->nodes_.resize(2);
  s->nodes_[0].types = kAllTypes;  // `true`; nodes_[1], admitting nothing, is `false`
  SchemaCompiler c(*s, doc);
  s->root_ = c.node(doc, "#");
  c.finish();
  if (s->nodes_[s->root_].min_depth > SchemaPrefix::kMaxDepth)
    throw Error("the schema admits no value (within a nesting depth of 64)");
  return s;
}

SchemaPrefix::SchemaPrefix(const JsonSchema& schema) : schema_(&schema) {
  Top t;
  t.node = schema.root_;
  t.phase = kValue;
  st_.tops.push_back(t);
}

namespace {

// The innermost container of the parse whose frames end `frames` (the one being stepped):
// undeclared keys' hashes sit above their object.
template <typename Frames>
std::size_t container(const Frames& frames) {
  std::size_t i = frames.size();
  while (frames[i - 1].kind == kKeyFrame) --i;
  return i - 1;
}

void end_value(uint8_t depth, uint8_t& phase) { phase = depth == 0 ? kDone : kAfterValue; }

// Whether some integer with `neg` sign whose digits begin with those of m (m > 0) lies in [lo, hi].
bool int_viable(int64_t lo, int64_t hi, bool neg, uint64_t m) {
  const i128 tlo = neg ? std::max<i128>(-i128{hi}, 1) : std::max<i128>(lo, 1);
  const i128 thi = neg ? -i128{lo} : i128{hi};
  for (i128 a = m, p = 1; a <= thi; a *= 10, p *= 10)
    if (a + p - 1 >= tlo) return true;
  return false;
}
bool int_in(int64_t lo, int64_t hi, bool neg, uint64_t m) {
  const i128 v = neg ? -i128{m} : i128{m};
  return v >= lo && v <= hi;
}

bool enum_viable(const std::vector<uint8_t>& depth, uint32_t lo, uint32_t hi, uint8_t open) {
  for (uint32_t i = lo; i < hi; ++i)
    if (std::size_t{open} + depth[i] <= SchemaPrefix::kMaxDepth) return true;
  return false;
}

}  // namespace

bool SchemaPrefix::extra_ok(const Top& t, const Frame& obj) const {
  const auto& nodes = schema_->nodes_;
  return obj.n_extra < kMaxExtraKeys && std::size_t{t.depth} + nodes[nodes[obj.node].additional].min_depth <= kMaxDepth;
}

bool SchemaPrefix::declared_viable(const Top& t, const Frame& obj, uint32_t lo, uint32_t hi) const {
  const auto& nodes = schema_->nodes_;
  const JsonSchema::Node& n = nodes[obj.node];
  for (uint32_t i = lo; i < hi; ++i)
    if (!((obj.word >> i) & 1) && std::size_t{t.depth} + nodes[n.props[i]].min_depth <= kMaxDepth) return true;
  return false;
}

bool SchemaPrefix::key_possible(const Top& t, std::size_t obj, const Out& out) const {
  const Frame& f = out.frames[obj];
  return extra_ok(t, f) || declared_viable(t, f, 0, static_cast<uint32_t>(schema_->nodes_[f.node].names.size()));
}

SchemaPrefix::Did SchemaPrefix::close_container(Top& t, Out& out) const {
  out.frames.resize(container(out.frames));
  --t.depth;
  end_value(t.depth, t.phase);
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::value_start(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const std::size_t n_base = out.frames.size() - base;
  int emitted = 0;
  // Each successor but the first gets its own copy of the parse's frames.
  auto emit = [&](Top s, const Frame* push) {
    std::size_t b = base;
    if (emitted++) {
      b = out.frames.size();
      out.frames.append_own(base, n_base);
    }
    if (push) out.frames.push_back(*push), ++s.depth;
    s.n_frames = static_cast<uint16_t>(out.frames.size() - b);
    out.tops.push_back(s);
  };
  for (uint32_t leaf : nodes[t.node].leaves) {
    const JsonSchema::Node& l = nodes[leaf];
    Top s = t;
    s.node = leaf, s.flags = 0, s.re = 0;
    if (l.is_enum) {
      uint32_t lo = 0, hi = static_cast<uint32_t>(l.enum_text.size());
      narrow(l.enum_text, lo, hi, 0, c);
      if (!enum_viable(l.enum_depth, lo, hi, t.depth)) continue;
      s.phase = kChoice, s.lo = lo, s.hi = hi, s.at = 1;
      emit(s, nullptr);
      continue;
    }
    const bool bounded = l.bounded && !(l.types & kNumber);
    Frame f;
    f.node = leaf;
    switch (c) {
      case '{':
        if (!(l.types & kObject) || std::size_t{t.depth} + l.min_depth_object > kMaxDepth) break;
        f.kind = kObjFrame, s.phase = kObjFirst;
        emit(s, &f);
        break;
      case '[':
        if (!(l.types & kArray) || std::size_t{t.depth} + l.min_depth_array > kMaxDepth) break;
        f.kind = kArrFrame, s.phase = kArrFirst;
        emit(s, &f);
        break;
      case '"':
        if (!(l.types & kStr)) break;
        s.phase = kString, s.at = 0;  // s.re: Regex::start()
        emit(s, nullptr);
        break;
      case 't':
      case 'f':
      case 'n':
        if (!(l.types & (c == 'n' ? kNull : kBool))) break;
        s.phase = kLiteral, s.lit = c == 't' ? 0 : c == 'f' ? 1 : 2, s.lit_at = 1;
        emit(s, nullptr);
        break;
      default:
        if (!(l.types & kInteger) || !(c == '-' || is_digit(c))) break;
        s.num = 0;
        if (c == '-') {
          if (bounded && l.lo >= 0) break;  // no "-0" under bounds: a negative must fit
          s.phase = kNumMinus, s.flags = kNeg;
        } else if (c == '0') {
          if (bounded && !int_in(l.lo, l.hi, false, 0)) break;
          s.phase = kNumZero;
        } else {
          if (bounded && !int_viable(l.lo, l.hi, false, c - '0')) break;
          s.phase = kNumInt, s.num = c - '0';
        }
        emit(s, nullptr);
    }
  }
  return emitted ? Did::emitted : Did::drop;
}

SchemaPrefix::Did SchemaPrefix::value_string_byte(Top& t, uint8_t c) const {
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  if (n.pattern) {
    // The DFA reads the string's bytes as written (escapes included, in their canonical form):
    // a '"' in kString closes the string (one inside it comes escaped), where the DFA accepts.
    if (t.phase == kString && t.utf8_left == 0 && c == '"') {
      if (!n.pattern->accepting(t.re)) return Did::drop;
      t.re = 0;  // no longer read: parses that differ in it alone may merge
    } else {
      const int32_t next = n.pattern->next(t.re, c);
      if (next < 0) return Did::drop;
      t.re = next;  // and the JSON lexer below, which takes every byte the DFA does
    }
  }
  switch (t.phase) {
    case kString:
      if (t.utf8_left) return utf8_continuation(t, c) ? Did::keep : Did::drop;
      if (t.flags & kLowNeeded) {  // after a high surrogate's escape only its low half's escape may come
        if (c != '\\') return Did::drop;
        t.phase = kEscape;
        return Did::keep;
      }
      if (c == '"') {
        if (t.at < n.min_length) return Did::drop;
        end_value(t.depth, t.phase);
        return Did::keep;
      }
      if (c < 0x20 || t.at >= n.max_length) return Did::drop;  // control characters must be escaped
      ++t.at;  // a character begins (an escape is one)
      if (c == '\\') {
        t.phase = kEscape;
        return Did::keep;
      }
      return c < 0x80 || utf8_lead(t, c) ? Did::keep : Did::drop;
    case kEscape:
      if (t.flags & kLowNeeded) {
        if (c != 'u') return Did::drop;
      } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        t.phase = kString;
        return Did::keep;
      } else if (c != 'u') {
        return Did::drop;
      }
      t.phase = kUnicode, t.hex_left = 4, t.hex_value = 0;
      return Did::keep;
    default: {  // kUnicode: surrogates as JsonPrefix checks them
      const int h = hex_value(c);
      const bool low_needed = t.flags & kLowNeeded;
      if (h < 0) return Did::drop;
      if (t.hex_left == 4 && low_needed && h != 0xd) return Did::drop;
      if (t.hex_left == 3 && (t.hex_value == 0xd && h >= 0xc) != low_needed) return Did::drop;
      t.hex_value = static_cast<uint16_t>(t.hex_value * 16 + h);
      if (--t.hex_left == 0) {
        const bool high = t.hex_value >= 0xd800 && t.hex_value <= 0xdbff;
        t.flags = static_cast<uint8_t>(high ? (t.flags | kLowNeeded) : (t.flags & ~kLowNeeded));
        t.phase = kString;
      }
      return Did::keep;
    }
  }
}

// A key's byte: it must keep the key canonical (as Boost.JSON writes names: raw UTF-8, the short
// escapes, \u00xx in lower case for the other control characters) and leave it either a prefix
// of a declared name not yet seen or, where undeclared keys may come, anything.
SchemaPrefix::Did SchemaPrefix::key_byte(Top& t, uint8_t c, Out& out) const {
  if (t.phase == kString && t.utf8_left == 0 && c == '"') return key_close(t, out);
  switch (t.phase) {
    case kString:
      if (t.utf8_left) {
        if (!utf8_continuation(t, c)) return Did::drop;
      } else if (c == '\\') {
        t.phase = kEscape;
      } else if (c < 0x20 || (c >= 0x80 && !utf8_lead(t, c))) {
        return Did::drop;
      }
      break;
    case kEscape:
      if (c == 'u') t.phase = kUnicode, t.hex_left = 4, t.hex_value = 0;
      else if (c == '"' || c == '\\' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') t.phase = kString;
      else return Did::drop;
      break;
    default: {  // kUnicode: \u00 then 0 or 1, then a lower-case digit; the short-escaped ones excluded
      const int k = 4 - t.hex_left;
      const int h = (c >= 'A' && c <= 'F') ? -1 : hex_value(c);
      if (h < 0 || (k < 2 && h != 0) || (k == 2 && h > 1)) return Did::drop;
      if (k == 3 && t.hex_value == 0 && (h == 8 || h == 9 || h == 0xa || h == 0xc || h == 0xd)) return Did::drop;
      t.hex_value = static_cast<uint16_t>(t.hex_value * 16 + h);
      if (--t.hex_left == 0) t.phase = kString;
    }
  }
  const Frame& obj = out.frames[container(out.frames)];
  uint32_t lo = t.lo, hi = t.hi;
  narrow(schema_->nodes_[obj.node].names, lo, hi, t.at, c);
  if (!declared_viable(t, obj, lo, hi) && !extra_ok(t, obj)) return Did::drop;
  t.lo = lo, t.hi = hi, ++t.at;
  t.num = (t.num ^ c) * kFnvPrime;
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::key_close(Top& t, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const std::size_t obj = container(out.frames);
  const Frame f = out.frames[obj];
  const JsonSchema::Node& n = nodes[f.node];
  if (t.lo < t.hi && n.names[t.lo].size() == t.at) {  // a declared name (the shortest candidate)
    const uint32_t i = t.lo;
    if (((f.word >> i) & 1) || std::size_t{t.depth} + nodes[n.props[i]].min_depth > kMaxDepth) return Did::drop;
    out.frames[obj].word |= uint64_t{1} << i;
    t.node = n.props[i];
  } else {
    if (!extra_ok(t, f)) return Did::drop;
    for (std::size_t j = obj + 1; j < out.frames.size(); ++j)
      if (out.frames[j].word == t.num) return Did::drop;  // a key this object already has
    ++out.frames[obj].n_extra;
    Frame k;
    k.kind = kKeyFrame, k.word = t.num;
    out.frames.push_back(k);
    t.node = n.additional;
  }
  t.phase = kColon, t.flags = 0;
  return Did::keep;
}

SchemaPrefix::Did SchemaPrefix::number_byte(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  const bool integer = !(n.types & kNumber), bounded = n.bounded && integer, neg = t.flags & kNeg;
  switch (t.phase) {
    case kNumMinus:
      if (c == '0' && !bounded) t.phase = kNumZero;
      else if (c >= '1' && c <= '9' && (!bounded || int_viable(n.lo, n.hi, true, c - '0'))) t.phase = kNumInt, t.num = c - '0';
      else return Did::drop;
      return Did::keep;
    case kNumDot:
      if (!is_digit(c)) return Did::drop;
      t.phase = kNumFrac;
      return Did::keep;
    case kNumE:
      if (c == '+' || c == '-') t.phase = kNumEsign;
      else if (is_digit(c)) t.phase = kNumExp;
      else return Did::drop;
      return Did::keep;
    case kNumEsign:
      if (!is_digit(c)) return Did::drop;
      t.phase = kNumExp;
      return Did::keep;
    default:  // kNumZero, kNumInt, kNumFrac, kNumExp
      if (is_digit(c) && t.phase != kNumZero) {
        if (bounded) {  // a 20th digit would pass 2^63 (and could wrap the magnitude)
          if (t.num >= 1000000000000000000ull) return Did::drop;
          const uint64_t m = t.num * 10 + (c - '0');
          if (!int_viable(n.lo, n.hi, neg, m)) return Did::drop;
          t.num = m;
        }
        return Did::keep;
      }
      if (!integer && c == '.' && (t.phase == kNumZero || t.phase == kNumInt)) {
        t.phase = kNumDot;
        return Did::keep;
      }
      if (!integer && (c == 'e' || c == 'E') && t.phase != kNumExp) {
        t.phase = kNumE;
        return Did::keep;
      }
      // The number ends here: the byte is the container's.
      if (bounded && !int_in(n.lo, n.hi, neg, t.num)) return Did::drop;
      end_value(t.depth, t.phase);
      return step(t, base, c, out);
  }
}

SchemaPrefix::Did SchemaPrefix::step(Top& t, std::size_t base, uint8_t c, Out& out) const {
  const auto& nodes = schema_->nodes_;
  const uint8_t run = t.ws;
  t.ws = 0;  // any other byte ends a run of whitespace
  const bool ws = is_ws(c);
  auto take_ws = [&] {
    if (run >= kMaxWhitespace) return Did::drop;
    t.ws = static_cast<uint8_t>(run + 1);
    return Did::keep;
  };
  switch (t.phase) {
    case kValue:
      if (ws) return take_ws();
      return value_start(t, base, c, out);
    case kObjFirst:
    case kObjKey: {
      if (ws) return take_ws();
      const std::size_t obj = container(out.frames);
      const Frame& f = out.frames[obj];
      if (c == '"') {
        if (!key_possible(t, obj, out)) return Did::drop;
        t.phase = kString, t.flags = kKey, t.lo = 0, t.hi = static_cast<uint32_t>(nodes[f.node].names.size());
        t.at = 0, t.num = kFnvBasis;
        return Did::keep;
      }
      if (c == '}' && t.phase == kObjFirst && (nodes[f.node].required & ~f.word) == 0) return close_container(t, out);
      return Did::drop;
    }
    case kColon:
      if (ws) return take_ws();
      if (c != ':') return Did::drop;
      t.phase = kValue;
      return Did::keep;
    case kArrFirst: {
      if (ws) return take_ws();
      Frame& f = out.frames.back();
      const JsonSchema::Node& a = nodes[f.node];
      if (c == ']') return a.min_items == 0 ? close_container(t, out) : Did::drop;
      if (a.max_items == 0) return Did::drop;
      f.word = 1;
      t.node = a.item(0);
      return value_start(t, base, c, out);
    }
    case kAfterValue: {
      if (ws) return take_ws();
      const std::size_t at = container(out.frames);
      Frame& f = out.frames[at];
      const JsonSchema::Node& n = nodes[f.node];
      if (f.kind == kObjFrame) {
        if (c == ',') {
          if (!key_possible(t, at, out)) return Did::drop;
          t.phase = kObjKey;
          return Did::keep;
        }
        return c == '}' && (n.required & ~f.word) == 0 ? close_container(t, out) : Did::drop;
      }
      if (c == ',') {
        if (f.word >= n.max_items) return Did::drop;
        const uint32_t item = n.item(f.word);
        if (std::size_t{t.depth} + nodes[item].min_depth > kMaxDepth) return Did::drop;
        ++f.word;
        t.node = item, t.phase = kValue;
        return Did::keep;
      }
      return c == ']' && f.word >= n.min_items ? close_container(t, out) : Did::drop;
    }
    case kString:
    case kEscape:
    case kUnicode:
      if (t.flags & kKey) return key_byte(t, c, out);
      return value_string_byte(t, c);
    case kLiteral: {
      const char* lit = kLiterals[t.lit];
      if (c != static_cast<uint8_t>(lit[t.lit_at])) return Did::drop;
      if (lit[++t.lit_at] == '\0') end_value(t.depth, t.phase);
      return Did::keep;
    }
    case kChoice: {
      const JsonSchema::Node& e = nodes[t.node];
      uint32_t lo = t.lo, hi = t.hi;
      narrow(e.enum_text, lo, hi, t.at, c);
      if (enum_viable(e.enum_depth, lo, hi, t.depth)) {
        t.lo = lo, t.hi = hi, ++t.at;
        return Did::keep;
      }
      // A whole value is never a prefix of another followed by its container's byte: the value
      // either goes on or has ended.
      if (!choice_exact(t)) return Did::drop;
      end_value(t.depth, t.phase);
      return step(t, base, c, out);
    }
    case kDone:
      return Did::drop;
    default:
      return number_byte(t, base, c, out);
  }
}

bool SchemaPrefix::choice_exact(const Top& t) const {
  const JsonSchema::Node& e = schema_->nodes_[t.node];
  return t.lo < t.hi && e.enum_text[t.lo].size() == t.at && std::size_t{t.depth} + e.enum_depth[t.lo] <= kMaxDepth;
}

bool SchemaPrefix::number_complete(const Top& t) const {
  if (t.phase != kNumZero && t.phase != kNumInt && t.phase != kNumFrac && t.phase != kNumExp) return false;
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  return !(n.bounded && !(n.types & kNumber)) || int_in(n.lo, n.hi, t.flags & kNeg, t.num);
}

bool SchemaPrefix::feed(uint8_t c) {
  if (st_.tops.size() == 1) {
    // One parse (the usual case, and the token trie's walk runs feed() at every node it visits):
    // stepped in place. Before refusing, a step changes no frame but the last (an array's item
    // count), so that is all there is to restore.
    const Top before = st_.tops[0];
    const std::size_t n = st_.frames.size();
    const Frame last = n ? st_.frames[n - 1] : Frame{};
    Top t = before;
    st_.tops.clear();
    switch (step(t, 0, c, st_)) {
      case Did::drop:
        st_.frames.resize(n);
        if (n) st_.frames[n - 1] = last;
        st_.tops.push_back(before);
        return false;
      case Did::keep:
        t.n_frames = static_cast<uint16_t>(st_.frames.size());
        st_.tops.push_back(t);
        return true;
      case Did::emitted:
        if (st_.tops.size() > 1) merge(st_);
        return true;
    }
  }
  Out out;
  std::size_t from = 0;
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    Top t = st_.tops[i];
    const std::size_t base = out.frames.size();
    out.frames.resize(base + t.n_frames);
    std::memcpy(&out.frames[base], &st_.frames[from], t.n_frames * sizeof(Frame));
    from += t.n_frames;
    switch (step(t, base, c, out)) {
      case Did::drop:
        out.frames.resize(base);
        break;
      case Did::keep:
        t.n_frames = static_cast<uint16_t>(out.frames.size() - base);
        out.tops.push_back(t);
        break;
      case Did::emitted:
        break;
    }
  }
  if (out.tops.empty()) return false;
  if (out.tops.size() > 1) merge(out);
  st_ = std::move(out);
  return true;
}

void SchemaPrefix::merge(Out& out) {  // merges equal parses; keeps the first kMaxAlternatives
  Out kept;
  std::size_t at = 0;
  for (std::size_t i = 0; i < out.tops.size() && kept.tops.size() < kMaxAlternatives; at += out.tops[i++].n_frames) {
    const Top& t = out.tops[i];
    bool dup = false;
    for (std::size_t j = 0, kat = 0; j < kept.tops.size() && !dup; kat += kept.tops[j++].n_frames)
      dup = kept.tops[j] == t && std::equal(&out.frames[at], &out.frames[at] + t.n_frames, &kept.frames[kat]);
    if (dup) continue;
    kept.tops.push_back(t);
    const std::size_t b = kept.frames.size();
    kept.frames.resize(b + t.n_frames);
    std::memcpy(&kept.frames[b], &out.frames[at], t.n_frames * sizeof(Frame));
  }
  out = std::move(kept);
}

bool SchemaPrefix::feed(std::string_view bytes) { return feed_all(*this, bytes); }

bool SchemaPrefix::complete() const {
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    const Top& t = st_.tops[i];
    if (t.phase == kDone) return true;
    if (t.depth == 0 && (number_complete(t) || (t.phase == kChoice && choice_exact(t)))) return true;
  }
  return false;
}

const Regex* SchemaPrefix::pattern_state(int32_t& state) const {
  if (st_.tops.size() != 1) return nullptr;
  const Top& t = st_.tops[0];
  if (t.phase != kString || (t.flags & (kKey | kLowNeeded))) return nullptr;
  const JsonSchema::Node& n = schema_->nodes_[t.node];
  if (!n.pattern) return nullptr;
  state = t.re;
  return n.pattern.get();
}

int64_t SchemaPrefix::plain_room() const {
  int64_t room = -1;
  std::size_t end = 0;
  for (std::size_t i = 0; i < st_.tops.size(); ++i) {
    const Top& t = st_.tops[i];
    const std::size_t first = end;
    end += t.n_frames;
    if (t.phase != kString || (t.flags & kLowNeeded) || t.utf8_left) return -1;
    if (t.flags & kKey) {
      // A key that may be an undeclared one takes any run of plain characters (key_byte keeps
      // such a key whatever its bytes; it is told from the others at its close).
      std::size_t obj = end;
      while (obj > first && st_.frames[obj - 1].kind == kKeyFrame) --obj;
      if (obj == first || !extra_ok(t, st_.frames[obj - 1])) return -1;
      room = kNoLimit;
    } else {
      if (schema_->nodes_[t.node].pattern) return -1;  // its DFA decides, token by token
      const uint64_t most = schema_->nodes_[t.node].max_length;
      // A plain token of c characters is taken by some parse iff c <= the largest room.
      room = std::max<int64_t>(room, most == UINT64_MAX ? kNoLimit : static_cast<int64_t>(std::min<uint64_t>(most - t.at, kNoLimit - 1)));
    }
  }
  return room;
}

}  // namespace dpa::engine
