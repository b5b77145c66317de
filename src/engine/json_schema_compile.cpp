// The schema compiler of json_schema.h: a schema document to JsonSchema's node graph (one node
// per subschema reached, $ref cycles closed), refusing what the recognizer cannot follow by
// keyword and JSON pointer; and the process-wide cache of compiled schemas by text.
#include "engine/json_schema.h"

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

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
  // `format` is read apart (format_regex): the names below it knows are asserted, the rest ignored.
  static constexpr std::string_view kAnnotations[] = {"title",      "description", "default",    "examples",
                                                      "$schema",    "$id",         "$comment",   "deprecated",
                                                      "readOnly",   "writeOnly"};
  return std::find(std::begin(kAnnotations), std::end(kAnnotations), k) != std::end(kAnnotations);
}

// Whether the DFA takes a JSON string's text (quotes included) whole.
bool matches(const Regex& re, std::string_view quoted) {
  RegexPrefix p(re);
  return p.feed(quoted.substr(1, quoted.size() - 2)) && p.complete();
}

constexpr std::string_view kBoundKeywords[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
bool is_bound(std::string_view k) {
  return std::find(std::begin(kBoundKeywords), std::end(kBoundKeywords), k) != std::end(kBoundKeywords);
}
bool exact_number(std::string_view k) { return is_bound(k) || k == "multipleOf"; }  // BoundTexts keeps these

// The texts of the numbers under the bound keywords and multipleOf, by JSON pointer ("#/a/0/minimum"), from a
// second parse of the document: Boost.JSON keeps a double only (an ulp off past 15 digits or
// exponents past 22, 0 or inf past a double's range), and bounds on numbers are compared with the
// output's digits exactly. Where a key repeats, the last one's, as in the parsed document.
class BoundTexts {
 public:
  static constexpr std::size_t max_array_size = -1, max_object_size = -1, max_string_size = -1, max_key_size = -1;
  std::map<std::string, std::string> texts;

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_array_begin(boost::system::error_code&) { return open(false); }
  bool on_array_end(std::size_t, boost::system::error_code&) { return close(); }
  bool on_object_begin(boost::system::error_code&) { return open(true); }
  bool on_object_end(std::size_t, boost::system::error_code&) { return close(); }
  bool on_string_part(json::string_view, std::size_t, boost::system::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, boost::system::error_code&) { return value(); }
  bool on_key_part(json::string_view s, std::size_t, boost::system::error_code&) { return key_.append(s.data(), s.size()), true; }
  bool on_key(json::string_view s, std::size_t, boost::system::error_code&) {
    key_.append(s.data(), s.size());
    stack_.back().key = std::move(key_);
    key_.clear();
    return true;
  }
  bool on_number_part(json::string_view s, boost::system::error_code&) { return number_.append(s.data(), s.size()), true; }
  bool on_int64(int64_t, json::string_view s, boost::system::error_code&) { return number(s); }
  bool on_uint64(uint64_t, json::string_view s, boost::system::error_code&) { return number(s); }
  bool on_double(double, json::string_view s, boost::system::error_code&) { return number(s); }
  bool on_bool(bool, boost::system::error_code&) { return value(); }
  bool on_null(boost::system::error_code&) { return value(); }
  bool on_comment_part(json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(json::string_view, boost::system::error_code&) { return true; }

 private:
  struct Level {
    bool object = false;
    std::string key;        // object: the current member's
    std::size_t index = 0;  // array: the current item's
  };
  std::vector<Level> stack_;
  std::string key_, number_;

  bool open(bool object) {
    stack_.push_back({object, {}, 0});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return value();
  }
  bool value() {  // a value has ended
    if (!stack_.empty() && !stack_.back().object) ++stack_.back().index;
    return true;
  }
  bool number(json::string_view s) {
    number_.append(s.data(), s.size());
    if (!stack_.empty() && stack_.back().object && exact_number(stack_.back().key)) {
      std::string p = "#";
      for (const Level& l : stack_) p += "/" + (l.object ? pointer_token(l.key) : std::to_string(l.index));
      texts[p] = number_;
    }
    number_.clear();
    return value();
  }
};

// A JSON number exactly: 0.sig × 10^point, sig without leading or trailing zeros (empty for 0,
// which is never negative).
struct Decimal {
  bool neg = false;
  std::string sig;
  int64_t point = 0;
};

Decimal decimal(std::string_view text) {  // text: a JSON number
  Decimal d;
  std::size_t i = 0;
  if (i < text.size() && text[i] == '-') d.neg = true, ++i;
  std::string digits;
  int64_t point = 0;
  for (; i < text.size() && is_digit(static_cast<uint8_t>(text[i])); ++i) digits += text[i], ++point;
  if (i < text.size() && text[i] == '.')
    for (++i; i < text.size() && is_digit(static_cast<uint8_t>(text[i])); ++i) digits += text[i];
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    const bool neg = ++i < text.size() && text[i] == '-';
    if (i < text.size() && (text[i] == '-' || text[i] == '+')) ++i;
    int64_t e = 0;  // saturated: far past what compile() takes
    for (; i < text.size() && is_digit(static_cast<uint8_t>(text[i])); ++i) e = std::min<int64_t>(e * 10 + (text[i] - '0'), int64_t{1} << 40);
    point += neg ? -e : e;
  }
  const std::size_t first = digits.find_first_not_of('0');
  if (first == std::string::npos) return Decimal{};
  digits.erase(digits.find_last_not_of('0') + 1);
  d.sig = digits.substr(first);
  d.point = point - static_cast<int64_t>(first);
  return d;
}

int compare_magnitudes(const Decimal& a, const Decimal& b) {
  if (a.sig.empty() || b.sig.empty()) return static_cast<int>(!a.sig.empty()) - static_cast<int>(!b.sig.empty());
  if (a.point != b.point) return a.point < b.point ? -1 : 1;
  const int c = a.sig.compare(b.sig);  // no trailing zeros: a prefix is the smaller
  return (c > 0) - (c < 0);
}
int compare(const Decimal& a, const Decimal& b) {
  if (a.neg != b.neg) return a.neg ? -1 : 1;
  return a.neg ? -compare_magnitudes(a, b) : compare_magnitudes(a, b);
}

// Decimal digit strings as unsigned integers (no leading zeros; "0" for 0), for multipleOf's
// rounding of bounds: long division and multiplication by a small integer, and +1.
std::string strip_zeros(std::string s) {
  const std::size_t first = s.find_first_not_of('0');
  return first == std::string::npos ? "0" : s.substr(first);
}
std::string divide(const std::string& a, uint64_t p, uint64_t& rem) {
  std::string q;
  rem = 0;
  for (char c : a) {
    const uint64_t cur = rem * 10 + static_cast<uint64_t>(c - '0');
    q += static_cast<char>('0' + cur / p);
    rem = cur % p;
  }
  return strip_zeros(q);
}
std::string multiply(const std::string& a, uint64_t p) {
  std::string out(a.size() + 20, '0');
  uint64_t carry = 0;
  std::size_t o = out.size();
  for (std::size_t i = a.size(); i-- > 0;) {
    const uint64_t cur = static_cast<uint64_t>(a[i] - '0') * p + carry;
    out[--o] = static_cast<char>('0' + cur % 10);
    carry = cur / 10;
  }
  for (; carry; carry /= 10) out[--o] = static_cast<char>('0' + carry % 10);
  return strip_zeros(out);
}
std::string add_one(std::string a) {
  std::size_t i = a.size();
  while (i > 0 && a[i - 1] == '9') a[--i] = '0';
  if (i == 0) return "1" + a;
  ++a[i - 1];
  return a;
}

// multipleOf: q = p·10^-k, p a positive integer (q's significant digits), k >= 0.
struct Multiple {
  uint64_t p = 1;
  uint32_t k = 0;
  // The multiple of q nearest to d on the side `up` (ceil or floor of d / q), times q.
  Decimal round(const Decimal& d, bool up) const {
    // |d|·10^k = 0.sig × 10^(point + k): its integer part, and whether a fraction is left.
    const int64_t ints = d.sig.empty() ? 0 : d.point + k;
    std::string whole = "0";
    bool frac = !d.sig.empty() && ints <= 0;
    if (ints > 0) {
      whole = d.sig.substr(0, static_cast<std::size_t>(std::min<int64_t>(ints, static_cast<int64_t>(d.sig.size()))));
      whole.append(static_cast<std::size_t>(std::max<int64_t>(0, ints - static_cast<int64_t>(d.sig.size()))), '0');
      frac = static_cast<int64_t>(d.sig.size()) > ints;
    }
    // The magnitude rounds away from zero where the number rounds up and is positive, or down and negative.
    const bool away = up != d.neg;
    uint64_t rem = 0;
    std::string n = divide(away && frac ? add_one(whole) : whole, p, rem);
    if (away && rem) n = add_one(n);
    const std::string v = multiply(n, p);
    return decimal((d.neg && v != "0" ? "-" : "") + v + "e-" + std::to_string(k));
  }
  // The multiple next past d, above it where up, else below (d itself excluded).
  Decimal past(const Decimal& d, bool up) const {
    Decimal q = decimal(std::to_string(p) + "e-" + std::to_string(k));
    q.neg = !up;
    return sum(round(d, !up), q);
  }
  static Decimal sum(const Decimal& a, const Decimal& b) {  // exact, as digit strings at a common scale
    const int64_t scale = std::max<int64_t>({0, static_cast<int64_t>(a.sig.size()) - a.point, static_cast<int64_t>(b.sig.size()) - b.point});
    auto scaled = [&](const Decimal& d) {  // d·10^scale, an integer
      if (d.sig.empty()) return std::string("0");
      return d.sig + std::string(static_cast<std::size_t>(d.point + scale - static_cast<int64_t>(d.sig.size())), '0');
    };
    std::string x = scaled(a), y = scaled(b);
    bool neg = a.neg;
    if (a.neg != b.neg) {  // a difference: the larger magnitude less the smaller
      const bool x_big = x.size() != y.size() ? x.size() > y.size() : x >= y;
      if (!x_big) std::swap(x, y), neg = b.neg;
      std::string out = x;
      int borrow = 0;
      for (std::size_t i = 0; i < out.size(); ++i) {
        const std::size_t xi = out.size() - 1 - i;
        int v = (x[xi] - '0') - borrow - (i < y.size() ? y[y.size() - 1 - i] - '0' : 0);
        borrow = v < 0;
        out[xi] = static_cast<char>('0' + (v + 10) % 10);
      }
      x = strip_zeros(out);
    } else {
      std::string out;
      int carry = 0;
      for (std::size_t i = 0; i < std::max(x.size(), y.size()) || carry; ++i) {
        const int v = (i < x.size() ? x[x.size() - 1 - i] - '0' : 0) + (i < y.size() ? y[y.size() - 1 - i] - '0' : 0) + carry;
        out.insert(out.begin(), static_cast<char>('0' + v % 10));
        carry = v / 10;
      }
      x = strip_zeros(out);
    }
    return decimal((neg && x != "0" ? "-" : "") + x + "e-" + std::to_string(scale));
  }
};

// A scalar's value hash (json_schema_internal.h's value_hash), as the recognizer reads it.
uint64_t scalar_hash(const json::value& v) {
  if (v.is_null()) return value_hash::literal_hash(2);
  if (v.is_bool()) return value_hash::literal_hash(v.get_bool() ? 0 : 1);
  if (v.is_string()) return value_hash::string_hash(std::string_view(v.get_string()));
  const Decimal d = decimal(json::serialize(v));
  return value_hash::decimal_hash(d.neg, d.sig, d.point);
}

}  // namespace

// Builds the node graph from the document: one node per subschema reached (memoized by its
// address in the document, so $ref cycles close), then the leaves and least depths.
class SchemaCompiler {
 public:
  SchemaCompiler(JsonSchema& s, const json::value& doc, std::string_view text) : s_(s), doc_(doc), text_(text) {}

  uint32_t node(const json::value& v, const std::string& path) {
    if (auto it = memo_.find(&v); it != memo_.end()) return it->second;
    if (s_.nodes_.size() >= JsonSchema::kMaxNodes + 2) fail(path, "more than 4096 subschemas are not supported");
    const auto id = static_cast<uint32_t>(s_.nodes_.size());
    s_.nodes_.emplace_back();
    memo_[&v] = id;
    JsonSchema::Node n = build(v, path);  // recursion appends to nodes_: fill a copy, then store it
    if (n.unique) unique_at_[id] = path + "/uniqueItems";
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
    for (const auto& [id, path] : unique_at_) unique_items(nodes[id], path);
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

  // uniqueItems: true, once the leaves are known. Followed where every item is a scalar, and each
  // item's schema can take kMaxUniqueItems values or more, or there is no prefixItems (then the
  // items' one schema's distinct values are counted: a ',' needs one left, minItems needs that
  // many); refused elsewhere. An array schema whose minItems passes its items' distinct values
  // admits no array.
  void unique_items(JsonSchema::Node& n, const std::string& path) {
    constexpr uint32_t cap = SchemaPrefix::kMaxUniqueItems;
    if (!(n.types & kArray) || n.max_items <= 1) {  // never two items to tell apart
      n.unique = false;
      return;
    }
    std::vector<uint32_t> positions(n.prefix_items.begin(), n.prefix_items.begin() + static_cast<std::ptrdiff_t>(std::min<uint64_t>(n.prefix_items.size(), n.max_items)));
    if (n.max_items > n.prefix_items.size()) positions.push_back(n.items);
    uint32_t values = cap;
    for (uint32_t p : positions) {
      const uint32_t d = distinct_values(p, path);
      if (d == 0) break;  // no item there, nor past it
      if (!n.prefix_items.empty() && d < cap)
        fail(path, "'uniqueItems' beside 'prefixItems' is supported only where every item can take " + std::to_string(cap) +
                       " distinct values or more");
      values = d;  // the one schema's, without prefixItems
    }
    if (values < cap && n.min_items > values) {  // not that many distinct values
      n.types &= ~kArray;
      n.unique = false;
      return;
    }
    if (n.min_items > cap) fail(path, "'uniqueItems' with a minItems above " + std::to_string(cap) + " is not supported");
    n.unique_values = values;
  }

  // The distinct values a uniqueItems array's item of schema `node` can take, up to kMaxUniqueItems;
  // refuses items that may be objects or arrays, and strings under a pattern.
  uint32_t distinct_values(uint32_t node, const std::string& path) {
    constexpr uint32_t cap = SchemaPrefix::kMaxUniqueItems;
    const auto& nodes = s_.nodes_;
    std::set<uint64_t> values;  // value hashes
    bool many = false;
    for (uint32_t leaf : nodes[node].leaves) {
      const JsonSchema::Node& l = nodes[leaf];
      if (l.is_enum) {
        for (std::size_t i = 0; i < l.enum_text.size(); ++i) {
          if (l.enum_depth[i] > 0)
            fail(path, "'uniqueItems' is supported where every item is a string, number, boolean or null: an enum/const item here is an object or array");
          values.insert(l.enum_hash[i]);
        }
        continue;
      }
      if (l.types & (kObject | kArray))
        fail(path, "'uniqueItems' is supported where every item is a string, number, boolean or null: the items here may be objects or arrays");
      if (l.types & kNull) values.insert(value_hash::literal_hash(2));
      if (l.types & kBool) values.insert(value_hash::literal_hash(0)), values.insert(value_hash::literal_hash(1));
      if (l.types & kStr) {
        if (l.format_only) {  // uniqueness is followed without it (see json_schema.h)
          s_.nodes_[leaf].pattern = nullptr, s_.nodes_[leaf].format_only = false;
        } else if (l.pattern) {
          fail(path, "'uniqueItems' on strings under a 'pattern' is not supported");
        }
        if (l.max_length == 0) values.insert(value_hash::string_hash(std::string_view()));
        else many = true;  // a million strings of one character
      }
      if (l.types & kNumber) {
        if (l.mult_p) fail(path, "'uniqueItems' on numbers under 'multipleOf' is not supported (on integers it is)");
        if (!l.numbers) many = true;
        else
          for (const NumberBounds::Side& side : l.numbers->side) {
            if (side.point) values.insert(side.hi_hash);
            else if (side.open) many = true;  // as many values as decimals between the bounds
          }
      } else if (l.types & kInteger) {
        // The bounds are multiples of int_mod (the compiler rounded them in).
        if (!l.bounded || (i128{l.hi} - l.lo) / l.int_mod + 1 >= cap) many = true;
        else
          for (i128 v = l.lo; v <= l.hi; v += l.int_mod) values.insert(value_hash::int_hash(v));
      }
    }
    return many ? cap : static_cast<uint32_t>(std::min<std::size_t>(values.size(), cap));
  }

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
    std::string format;                                 // a `format` asserted (format_regex), or ""
    std::shared_ptr<const Regex> fmt;
    for (const auto& kv : v.as_object()) {
      const std::string_view k = kv.key();
      const std::string p = path + "/" + pointer_token(k);
      if (k == "format") {  // a name not asserted (or not a string) is an annotation
        if (kv.value().is_string() && (fmt = format_regex(kv.value().get_string()))) format = std::string(std::string_view(kv.value().get_string()));
        continue;
      }
      if (is_annotation(k)) continue;
      if (k == "uniqueItems") {
        if (!kv.value().is_bool()) fail(p, "'uniqueItems' must be a boolean");
        if (!kv.value().get_bool()) continue;  // asserts nothing
      }
      if (k == "$defs" || k == "definitions") {  // compiled for their errors; reached through $ref
        if (!kv.value().is_object()) fail(p, "'" + std::string(k) + "' must be an object");
        for (const auto& d : kv.value().as_object()) node(d.value(), p + "/" + pointer_token(d.key()));
        continue;
      }
      static constexpr std::string_view kKnown[] = {
          "type",     "enum",     "const",     "properties", "required",  "additionalProperties",
          "items",    "prefixItems", "minItems", "maxItems", "minLength", "maxLength",
          "minimum",  "maximum",  "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "$ref",
          "pattern", "uniqueItems", "multipleOf"};
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
      std::vector<std::tuple<std::string, uint8_t, uint64_t>> texts;
      for (const json::value* e : values) {
        const uint8_t kind = e->is_null() ? kNull : e->is_bool() ? kBool : e->is_object() ? kObject : e->is_array() ? kArray
                             : e->is_string() ? kStr : e->is_double() ? kNumber : (kInteger | kNumber);
        if (e->is_double() && !std::isfinite(e->get_double())) fail(path, "an enum/const number is out of range");
        if (fmt && e->is_string() && !matches(*fmt, json::serialize(*e))) continue;  // not of the format
        if (kind & n.types) texts.emplace_back(json::serialize(*e), nesting(*e), e->is_object() || e->is_array() ? 0 : scalar_hash(*e));
      }
      std::sort(texts.begin(), texts.end());
      texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
      n.types = 0, n.is_enum = true;
      for (auto& [text, depth, hash] : texts)
        n.enum_text.push_back(std::move(text)), n.enum_depth.push_back(depth), n.enum_hash.push_back(hash);
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
    n.unique = kw.count("uniqueItems") > 0;  // only a true one is kept

    // Strings.
    if (kw.count("minLength")) n.min_length = count(*kw["minLength"], at("minLength"));
    if (kw.count("maxLength")) n.max_length = count(*kw["maxLength"], at("maxLength"));
    if (n.min_length > n.max_length) n.types &= ~kStr;
    std::string key, label;  // the DFA's name in bounded()'s cache, and in its errors
    if (kw.count("pattern")) {
      if (!kw["pattern"]->is_string()) fail(at("pattern"), "'pattern' must be a string");
      const std::string text(kw["pattern"]->get_string());
      n.pattern = pattern(text, at("pattern"));
      key = "p" + text, label = "'pattern' " + text;
    }
    // A format applies to strings only; beside a pattern both must hold (the DFAs' product).
    if (fmt && (n.types & kStr)) {
      if (n.pattern) {
        n.pattern = formatted(fmt, format, key.substr(1), at("format"));
        if (!n.pattern) n.types &= ~kStr;  // no string of the format matches the pattern
      } else {
        n.pattern = fmt, n.format_only = true;
      }
      key = "f" + format + '\0' + key;  // no format's name has a NUL
      label = "'format' " + format + (label.empty() ? "" : " beside " + label);
    }
    // With lengths, the DFA is the pattern's and a length counter's product: a state then says
    // how many characters may still come, so neither bound can leave the string at a dead end.
    if (n.pattern && (n.min_length > 0 || n.max_length != UINT64_MAX) && (n.types & kStr)) {
      n.pattern = bounded(n.pattern, key, label, n.min_length, n.max_length,
                          at(kw.count("maxLength") ? "maxLength" : "minLength"));
      if (!n.pattern) n.types &= ~kStr;  // no string of those lengths matches
    }

    std::optional<Multiple> mult;
    if (kw.count("multipleOf")) mult = multiple(*kw["multipleOf"], at("multipleOf"));

    // Numbers: on a schema admitting non-integers, the bounds exactly, as decimals.
    if (n.types & kNumber) {
      number_bounds(n, kw, path, mult);
      if (mult) n.mult_p = static_cast<uint32_t>(mult->p), n.mult_k = mult->k;
      return n;
    }
    // Integers: the bounds rounded inwards to int64.
    i128 lo = INT64_MIN, hi = INT64_MAX;
    for (std::string_view k : kBoundKeywords) {
      if (!kw.count(k)) continue;
      const json::value& b = *kw[k];
      if (k == "minimum") lo = std::max(lo, rounded(b, true, at(k)));
      else if (k == "exclusiveMinimum") lo = std::max(lo, rounded(b, false, at(k)) + 1);
      else if (k == "maximum") hi = std::min(hi, rounded(b, false, at(k)));
      else hi = std::min(hi, rounded(b, true, at(k)) - 1);
      n.bounded = true;
    }
    // multipleOf on integers: x·10^k ≡ 0 (mod p), that is x ≡ 0 modulo p less the 2s and 5s that
    // 10^k has (0.5 takes every integer, 2.5 the multiples of 5). The bounds go in to multiples.
    if (mult) {
      uint64_t m = mult->p;
      for (uint32_t i = 0; i < mult->k && std::gcd(m, uint64_t{10}) > 1; ++i) m /= std::gcd(m, uint64_t{10});
      if (m > 1) {
        const i128 im = static_cast<i128>(m);
        auto floor_div = [&](i128 a) { return a >= 0 ? a / im : -((-a + im - 1) / im); };
        lo = -floor_div(-lo) * im, hi = floor_div(hi) * im;
        n.int_mod = m;
        n.bounded = true;  // kept within int64 as under bounds
      }
    }
    if (lo > hi) n.types &= ~kInteger;
    else n.lo = static_cast<int64_t>(lo), n.hi = static_cast<int64_t>(hi);
    return n;
  }

  // minimum / maximum / exclusiveMinimum / exclusiveMaximum on a schema admitting non-integers:
  // the tightest least and greatest (the exclusive one where they tie), then per sign the least
  // and greatest magnitude (json_schema_internal.h's NumberBounds). No number within them: the
  // schema admits no number.
  //
  // Beside multipleOf q (up to 1) the bounds go in to the nearest multiples, both then inclusive:
  // a prefix reaches a conforming value iff it reaches a value within them and a multiple (the
  // values it reaches are an interval of length at least q where one of them is integer digits
  // that more may follow, else [v, v + 10^-n)); q above 1 would break the first, and is refused.
  void number_bounds(JsonSchema::Node& n, std::map<std::string_view, const json::value*>& kw, const std::string& path,
                     const std::optional<Multiple>& mult) {
    struct End {
      Decimal v;
      bool exclusive = false;
    };
    std::optional<End> lo, hi;
    for (std::string_view k : kBoundKeywords) {
      if (!kw.count(k)) continue;
      const End e{bound(*kw[k], path + "/" + std::string(k)), k.starts_with("exclusive")};
      const bool least = k == "minimum" || k == "exclusiveMinimum";
      std::optional<End>& b = least ? lo : hi;
      const int c = b ? compare(e.v, b->v) : 0;
      if (!b || (least ? c > 0 : c < 0) || (c == 0 && e.exclusive)) b = e;
    }
    if (!lo && !hi) return;
    if (mult) {
      uint64_t one = 1;  // 10^k, where below p
      for (uint32_t i = 0; i < mult->k && one <= mult->p; ++i) one *= 10;
      if (mult->p > one)  // q = p·10^-k > 1
        fail(path + "/multipleOf", "'multipleOf' above 1 beside minimum / maximum on numbers is not supported (on integers it is)");
      if (lo) lo = End{lo->exclusive ? mult->past(lo->v, true) : mult->round(lo->v, true), false};
      if (hi) hi = End{hi->exclusive ? mult->past(hi->v, false) : mult->round(hi->v, false), false};
    }
    auto magnitude = [](const End& e) {
      Magnitude m;
      m.sig = e.v.sig;
      if (!m.sig.empty()) {
        m.lead = static_cast<uint32_t>(e.v.point < 0 ? -e.v.point : 0);
        m.ints = static_cast<uint32_t>(e.v.point > 0 ? e.v.point : 0);
      }
      m.exclusive = e.exclusive;
      return m;
    };
    auto side = [&](const End& least, const std::optional<End>& greatest, bool empty, bool neg) {
      NumberBounds::Side s;
      s.lo = magnitude(least);
      if (greatest) s.hi = magnitude(*greatest);
      else s.hi.none = true;
      const int c = greatest ? compare_magnitudes(least.v, greatest->v) : -1;
      s.open = !empty && (c < 0 || (c == 0 && !least.exclusive && !greatest->exclusive));
      s.point = s.open && c == 0;
      if (greatest) s.hi_hash = value_hash::decimal_hash(neg, greatest->v.sig, greatest->v.point);
      return s;
    };
    auto absolute = [](std::optional<End> e) {
      if (e) e->v.neg = false;
      return e;
    };
    const bool lo_neg = lo && lo->v.neg, lo_pos = lo && !lo->v.neg && !lo->v.sig.empty();
    const bool hi_neg = hi && hi->v.neg, hi_pos = hi && !hi->v.neg && !hi->v.sig.empty();
    NumberBounds b;
    // Without '-' the magnitude is the number: from max(lo, 0) to hi; none where hi < 0.
    b.side[0] = side(lo && !lo_neg ? *lo : End{}, hi, hi_neg, false);
    // With '-' it is the number negated: from max(-hi, 0) to -lo; none where lo > 0.
    b.side[1] = side(hi && !hi_pos ? *absolute(hi) : End{}, absolute(lo), lo_pos, true);
    if (!b.side[0].open && !b.side[1].open) n.types &= ~(kNumber | kInteger);
    else n.numbers = std::make_shared<const NumberBounds>(std::move(b));
  }

  // multipleOf: a number above 0, as p·10^-k from its text.
  Multiple multiple(const json::value& v, const std::string& path) {
    if (!v.is_number()) fail(path, "'multipleOf' must be a number greater than 0");
    const Decimal d = exact(v, path);
    if (d.neg || d.sig.empty()) fail(path, "'multipleOf' must be a number greater than 0");
    constexpr int64_t kMax = JsonSchema::kMaxBoundExponent;
    if (d.point > kMax || d.point < 1 - kMax)
      fail(path, "'multipleOf' must be from 1e-" + std::to_string(kMax) + " to below 1e" + std::to_string(kMax));
    const auto len = static_cast<int64_t>(d.sig.size());
    Multiple m;
    const std::string digits = d.point >= len ? d.sig + std::string(static_cast<std::size_t>(d.point - len), '0') : d.sig;
    m.k = static_cast<uint32_t>(std::max<int64_t>(0, len - d.point));
    if (digits.size() > 10 || std::stoull(digits) >= (uint64_t{1} << 31))
      fail(path, "'multipleOf' is supported where its digits, the point aside, make a number below 2147483648 (it is " +
                     digits + "e-" + std::to_string(m.k) + ")");
    m.p = std::stoull(digits);
    return m;
  }

  // A bound's value, exactly: its text as written where the second parse has it (BoundTexts).
  Decimal bound(const json::value& v, const std::string& path) {
    Decimal d = exact(v, path);
    constexpr int64_t kMax = JsonSchema::kMaxBoundExponent;  // 0.sig × 10^point: from 10^-kMax, below 10^kMax
    if (!d.sig.empty() && (d.point > kMax || d.point < 1 - kMax))
      fail(path, "a bound on numbers must be 0 or from 1e-" + std::to_string(kMax) + " to below 1e" + std::to_string(kMax) + " in magnitude");
    return d;
  }
  // A number keyword's value, exactly: its text as written where the second parse has it (BoundTexts).
  Decimal exact(const json::value& v, const std::string& path) {
    std::string text;
    if (v.is_int64()) {
      text = std::to_string(v.get_int64());
    } else if (v.is_uint64()) {
      text = std::to_string(v.get_uint64());
    } else if (v.is_double()) {
      if (!bound_texts_) {
        json::parse_options opt;
        opt.max_depth = 1000;  // as compile()'s parse, which this one follows
        json::basic_parser<BoundTexts> p(opt);
        boost::system::error_code ec;
        (void)p.write_some(false, text_.data(), text_.size(), ec);
        bound_texts_ = std::move(p.handler().texts);
      }
      if (const auto it = bound_texts_->find(path); it != bound_texts_->end()) {
        text = it->second;
      } else {  // not found (a $ref's pointer spelt otherwise): the double, in its shortest decimal
        if (!std::isfinite(v.get_double())) fail(path, "must be a finite number");
        char buf[32];
        text.assign(buf, std::to_chars(buf, buf + sizeof buf, v.get_double()).ptr);
      }
    } else {
      fail(path, "must be a number");
    }
    return decimal(text);
  }

  JsonSchema& s_;
  const json::value& doc_;
  std::string_view text_;                                         // the document's text
  std::optional<std::map<std::string, std::string>> bound_texts_;  // BoundTexts', parsed at the first double bound
  std::map<const json::value*, uint32_t> memo_;
  std::map<uint32_t, std::string> unique_at_;  // nodes with uniqueItems: true, and where that is
  std::map<std::string, std::shared_ptr<const Regex>> patterns_;  // by text: each compiled once

  // A pattern's DFA (over JSON-escaped bytes) cut to strings of [lo, hi] characters (hi
  // UINT64_MAX: no bound), or null when none matches. Lengths up to Regex::kMaxRepeat.
  std::shared_ptr<const Regex> bounded(const std::shared_ptr<const Regex>& re, const std::string& text,
                                       const std::string& label, uint64_t lo, uint64_t hi, const std::string& path) {
    const uint64_t cap = static_cast<uint64_t>(Regex::kMaxRepeat);
    if (lo > cap || (hi != UINT64_MAX && hi > cap))
      fail(path, "minLength and maxLength beside a 'pattern' or 'format' are supported up to " + std::to_string(cap));
    const std::string range = std::to_string(lo) + "," + (hi == UINT64_MAX ? "" : std::to_string(hi));
    const std::string key = text + '\0' + range;
    if (auto it = bounded_.find(key); it != bounded_.end()) return it->second;
    if (bounded_.size() >= JsonSchema::kMaxPatterns)
      fail(path, "more than " + std::to_string(JsonSchema::kMaxPatterns) + " distinct patterns or formats with lengths are not supported");
    try {
      return bounded_[key] = Regex::intersect(*re, *Regex::compile("[\\s\\S]{" + range + "}", Regex::Target::json_string));
    } catch (const Error& e) {
      fail(path, label + " with lengths {" + range + "}: " + e.what());
    }
  }
  std::map<std::string, std::shared_ptr<const Regex>> bounded_;  // by pattern (or format) and lengths

  // A format's DFA beside a pattern's (pattern(text)): the strings both take, or null when none.
  // At most kMaxPatterns distinct pairs a schema, apart from the patterns' own count.
  std::shared_ptr<const Regex> formatted(const std::shared_ptr<const Regex>& fmt, const std::string& format,
                                         const std::string& text, const std::string& path) {
    const std::string key = format + '\0' + text;
    if (auto it = formatted_.find(key); it != formatted_.end()) return it->second;
    if (formatted_.size() >= JsonSchema::kMaxPatterns)
      fail(path, "more than " + std::to_string(JsonSchema::kMaxPatterns) + " distinct pairs of a format and a pattern are not supported");
    try {
      return formatted_[key] = Regex::intersect(*fmt, *pattern(text, path));
    } catch (const Error& e) {
      fail(path, "'format' " + format + " beside 'pattern' " + text + ": " + e.what());
    }
  }
  std::map<std::string, std::shared_ptr<const Regex>> formatted_;  // by format and pattern text

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
         v.enum_depth.capacity() + v.enum_hash.capacity() * 8;
    for (const auto& t : v.enum_text) n += sizeof t + t.capacity();
    for (const auto& t : v.names) n += sizeof t + t.capacity();
    if (v.numbers) n += sizeof *v.numbers + v.numbers->side[0].lo.sig.capacity() + v.numbers->side[0].hi.sig.capacity() +
                        v.numbers->side[1].lo.sig.capacity() + v.numbers->side[1].hi.sig.capacity();
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
  SchemaCompiler c(*s, doc, schema_json);
  s->root_ = c.node(doc, "#");
  c.finish();
  if (s->nodes_[s->root_].min_depth > SchemaPrefix::kMaxDepth)
    throw Error("the schema admits no value (within a nesting depth of 64)");
  return s;
}

}  // namespace dpa::engine
