// Python semantics for template values: truthiness, str()/repr() printing, json.dumps, ==, <.
#include "text/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace dpa::text::jinja {

namespace json = boost::json;

Value Value::undefined(std::string name) {
  Value v;
  v.undefined_name_ = std::move(name);
  return v;
}

Value Value::from_ns(std::shared_ptr<Namespace> ns) {
  Value v;
  v.kind_ = Kind::ns;
  v.ns_ = std::move(ns);
  return v;
}

Value Value::from_callable(std::shared_ptr<Callable> fn) {
  Value v;
  v.kind_ = Kind::callable;
  v.fn_ = std::move(fn);
  return v;
}

int64_t Value::as_int() const {
  if (json_.is_int64()) return json_.get_int64();
  if (json_.is_uint64()) return static_cast<int64_t>(json_.get_uint64());
  if (json_.is_bool()) return json_.get_bool() ? 1 : 0;
  if (json_.is_double()) {
    const double d = json_.get_double();
    // Out of range (or NaN) the conversion is undefined behaviour.
    if (!(d > -9.2e18 && d < 9.2e18)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", d);
      throw Error(std::string("cannot convert ") + buf + " to an integer");
    }
    return static_cast<int64_t>(d);
  }
  throw Error("expected an integer, got " + type_name(*this));
}

double Value::as_double() const {
  if (json_.is_double()) return json_.get_double();
  return static_cast<double>(as_int());
}

json::value Value::to_json() && {
  if (kind_ == Kind::json) return std::move(json_);
  return static_cast<const Value&>(*this).to_json();
}

json::value Value::to_json() const& {
  switch (kind_) {
    case Kind::json:
      return json_;
    case Kind::ns: {
      json::object o;
      for (const auto& [k, v] : ns_->attrs) o[k] = v.to_json();
      return o;
    }
    default:
      return nullptr;
  }
}

Value* Namespace::find(const std::string& name) {
  for (auto& [k, v] : attrs)
    if (k == name) return &v;
  return nullptr;
}

void Namespace::set(const std::string& name, Value v) {
  if (Value* slot = find(name)) {
    *slot = std::move(v);
  } else {
    attrs.emplace_back(name, std::move(v));
  }
}

bool truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
      return false;
    case Value::Kind::ns:
    case Value::Kind::callable:
      return true;
    case Value::Kind::json:
      break;
  }
  const json::value& j = v.json();
  switch (j.kind()) {
    case json::kind::null:
      return false;
    case json::kind::bool_:
      return j.get_bool();
    case json::kind::int64:
      return j.get_int64() != 0;
    case json::kind::uint64:
      return j.get_uint64() != 0;
    case json::kind::double_:
      return j.get_double() != 0.0;
    case json::kind::string:
      return !j.get_string().empty();
    case json::kind::array:
      return !j.get_array().empty();
    case json::kind::object:
      return !j.get_object().empty();
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then laid out the way Python's repr does.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e_pos = sci.find('e');
  int exponent = std::stoi(sci.substr(e_pos + 1));
  std::string digits;
  for (size_t i = 0; i < e_pos; ++i)
    if (sci[i] != '.') digits += sci[i];
  std::string out;
  if (exponent >= -5 && exponent < 16) {
    if (exponent < 0) {
      out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      out = digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += ebuf;
  }
  return negative ? "-" + out : out;
}

std::vector<char32_t> utf8_decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < n && i + k < s.size(); ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

static void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const std::vector<char32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end; ++i) append_utf8(out, cps[i]);
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

// Code points Python's str.isprintable() rejects among those a chat is likely to carry.
static bool py_printable(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) return false;
  if ((cp >= 0x200B && cp <= 0x200F) || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF) return false;
  if (cp >= 0xD800 && cp <= 0xDFFF) return false;
  return true;
}

static std::string repr_string(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t cp : utf8_decode(s)) {
    if (cp == '\\') {
      out += "\\\\";
    } else if (cp == static_cast<char32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!py_printable(cp)) {
      char buf[16];
      if (cp < 0x100) {
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(cp));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
      }
      out += buf;
    } else {
      append_utf8(out, cp);
    }
  }
  out += quote;
  return out;
}

std::string repr_json(const json::value& j) {
  switch (j.kind()) {
    case json::kind::null:
      return "None";
    case json::kind::bool_:
      return j.get_bool() ? "True" : "False";
    case json::kind::int64:
      return std::to_string(j.get_int64());
    case json::kind::uint64:
      return std::to_string(j.get_uint64());
    case json::kind::double_:
      return float_repr(j.get_double());
    case json::kind::string:
      return repr_string(j.get_string());
    case json::kind::array: {
      std::string out = "[";
      bool first = true;
      for (const auto& e : j.get_array()) {
        if (!first) out += ", ";
        first = false;
        out += repr_json(e);
      }
      return out + "]";
    }
    case json::kind::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& kv : j.get_object()) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(kv.key()) + ": " + repr_json(kv.value());
      }
      return out + "}";
    }
  }
  return {};
}

std::string repr(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
      return "Undefined";
    case Value::Kind::ns: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& [k, a] : v.ns()->attrs) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(k) + ": " + repr(a);
      }
      return out + "}>";
    }
    case Value::Kind::callable:
      return "<function " + v.fn()->name + ">";
    case Value::Kind::json:
      return repr_json(v.json());
  }
  return {};
}

std::string to_str(const Value& v) {
  if (v.is_undefined()) return "";
  if (v.is_string()) return std::string(v.str());
  return repr(v);
}

static void json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", u);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

static void json_dump(std::string& out, const json::value& j, int indent, int depth) {
  auto newline = [&](int d) {
    out += '\n';
    out.append(static_cast<size_t>(indent * d), ' ');
  };
  // Python's separators: ", " without indent, "," plus newline with it.
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (j.kind()) {
    case json::kind::null: out += "null"; return;
    case json::kind::bool_: out += j.get_bool() ? "true" : "false"; return;
    case json::kind::int64: out += std::to_string(j.get_int64()); return;
    case json::kind::uint64: out += std::to_string(j.get_uint64()); return;
    case json::kind::double_: {
      double d = j.get_double();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case json::kind::string: json_string(out, j.get_string()); return;
    case json::kind::array: {
      const auto& a = j.get_array();
      if (a.empty()) { out += "[]"; return; }
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += item_sep;
        if (indent >= 0) newline(depth + 1);
        json_dump(out, a[i], indent, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += ']';
      return;
    }
    case json::kind::object: {
      const auto& o = j.get_object();
      if (o.empty()) { out += "{}"; return; }
      out += '{';
      bool first = true;
      for (const auto& kv : o) {
        if (!first) out += item_sep;
        first = false;
        if (indent >= 0) newline(depth + 1);
        json_string(out, kv.key());
        out += ": ";
        json_dump(out, kv.value(), indent, depth + 1);
      }
      if (indent >= 0) newline(depth);
      out += '}';
      return;
    }
  }
}

std::string to_json_text(const json::value& v, int indent) {
  std::string out;
  json_dump(out, v, indent, 0);
  return out;
}

std::string type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return "Undefined";
    case Value::Kind::ns: return "Namespace";
    case Value::Kind::callable: return "function";
    case Value::Kind::json: break;
  }
  switch (v.json().kind()) {
    case json::kind::null: return "NoneType";
    case json::kind::bool_: return "bool";
    case json::kind::int64:
    case json::kind::uint64: return "int";
    case json::kind::double_: return "float";
    case json::kind::string: return "str";
    case json::kind::array: return "list";
    case json::kind::object: return "dict";
  }
  return "?";
}

static bool json_numeric(const json::value& j) {
  return j.is_number() || j.is_bool();
}

static bool json_equals(const json::value& a, const json::value& b) {
  if (json_numeric(a) && json_numeric(b)) {
    if (a.is_double() || b.is_double()) return Value(a).as_double() == Value(b).as_double();
    return Value(a).as_int() == Value(b).as_int();
  }
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const auto& x = a.get_array();
    const auto& y = b.get_array();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!json_equals(x[i], y[i])) return false;
    return true;
  }
  if (a.is_object()) {
    const auto& x = a.get_object();
    const auto& y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& kv : x) {
      auto it = y.find(kv.key());
      if (it == y.end() || !json_equals(kv.value(), it->value())) return false;
    }
    return true;
  }
  return a == b;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_json() && b.is_json()) return json_equals(a.json(), b.json());
  if (a.is_undefined() && b.is_undefined()) return true;
  if (a.is_ns() && b.is_ns()) return a.ns() == b.ns();
  if (a.is_callable() && b.is_callable()) return a.fn() == b.fn();
  return false;
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_json() && b.is_json()) {
    const auto& x = a.json();
    const auto& y = b.json();
    if (json_numeric(x) && json_numeric(y)) {
      if (x.is_double() || y.is_double()) return a.as_double() < b.as_double();
      return a.as_int() < b.as_int();
    }
    if (x.is_string() && y.is_string()) {
      // Code point order equals UTF-8 byte order.
      return std::string_view(x.get_string()) < std::string_view(y.get_string());
    }
    if (x.is_array() && y.is_array()) {
      const auto& p = x.get_array();
      const auto& q = y.get_array();
      for (size_t i = 0; i < p.size() && i < q.size(); ++i) {
        if (json_equals(p[i], q[i])) continue;
        return less_than(Value(p[i]), Value(q[i]));
      }
      return p.size() < q.size();
    }
  }
  throw Error("'<' not supported between instances of '" + type_name(a) + "' and '" +
              type_name(b) + "'");
}

}  // namespace dpa::text::jinja
