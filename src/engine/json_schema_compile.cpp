// The schema compiler of json_schema.h: a schema document to JsonSchema's node graph (one node
// per subschema reached, $ref cycles closed), refusing what the recognizer cannot follow by
// keyword and JSON pointer; and the process-wide cache of compiled schemas by text.
#include "engine/json_schema.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "core/error.h"
#include "engine/compile_cache.h"
#include "engine/json_schema_internal.h"
#include "engine/regex.h"

namespace dpa::engine {
namespace {

namespace json = boost::json;
using namespace schema_detail;

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
      const std::string text(kw["pattern"]->get_string());
      n.pattern = pattern(text, at("pattern"));
      // With lengths, the DFA is the pattern's and a length counter's product: a state then says
      // how many characters may still come, so neither bound can leave the string at a dead end.
      if ((n.min_length > 0 || n.max_length != UINT64_MAX) && (n.types & kStr)) {
        n.pattern = bounded(n.pattern, text, n.min_length, n.max_length,
                            at(kw.count("maxLength") ? "maxLength" : "minLength"));
        if (!n.pattern) n.types &= ~kStr;  // no string of those lengths matches
      }
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

  // A pattern's DFA (over JSON-escaped bytes) cut to strings of [lo, hi] characters (hi
  // UINT64_MAX: no bound), or null when none matches. Lengths up to Regex::kMaxRepeat.
  std::shared_ptr<const Regex> bounded(const std::shared_ptr<const Regex>& re, const std::string& text, uint64_t lo,
                                       uint64_t hi, const std::string& path) {
    const uint64_t cap = static_cast<uint64_t>(Regex::kMaxRepeat);
    if (lo > cap || (hi != UINT64_MAX && hi > cap))
      fail(path, "minLength and maxLength beside a 'pattern' are supported up to " + std::to_string(cap));
    const std::string range = std::to_string(lo) + "," + (hi == UINT64_MAX ? "" : std::to_string(hi));
    const std::string key = text + '\0' + range;
    if (auto it = bounded_.find(key); it != bounded_.end()) return it->second;
    if (bounded_.size() >= JsonSchema::kMaxPatterns)
      fail(path, "more than " + std::to_string(JsonSchema::kMaxPatterns) + " distinct patterns with lengths are not supported");
    try {
      return bounded_[key] = Regex::intersect(*re, *Regex::compile("[\\s\\S]{" + range + "}", Regex::Target::json_string));
    } catch (const Error& e) {
      fail(path, std::string("'pattern' ") + text + " with lengths {" + range + "}: " + e.what());
    }
  }
  std::map<std::string, std::shared_ptr<const Regex>> bounded_;  // by pattern and lengths

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

}  // namespace dpa::engine
