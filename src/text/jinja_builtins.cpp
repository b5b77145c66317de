// Filters, tests, str/dict methods and globals of the chat-template interpreter, with the
// Python semantics Hugging Face templates rely on (code-point strings, None printing, tojson).
#include "text/jinja_builtins.h"

#include <algorithm>
#include <cmath>
#include <clocale>
#include <ctime>
#include <cwctype>
#include <locale.h>

#include "core/error.h"

namespace dpa::text::jinja {

namespace json = boost::json;

namespace {

using CodePoints = std::vector<char32_t>;

Value str_value(std::string s) { return Value(json::value(json::string(s))); }

const std::string& require_str(const Value& v, const char* what, std::string& storage) {
  if (!v.is_string()) throw Error(std::string(what) + " expects a string, got " + type_name(v));
  storage = std::string(v.str());
  return storage;
}

bool is_py_space(char32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// str.strip / lstrip / rstrip; `chars` null means whitespace.
std::string strip(std::string_view s, const Value* chars, bool left, bool right) {
  CodePoints cps = utf8_decode(s);
  CodePoints set;
  bool custom = chars != nullptr && !chars->is_none() && !chars->is_undefined();
  if (custom) {
    if (!chars->is_string()) throw Error("strip arg must be None or str");
    set = utf8_decode(chars->str());
  }
  auto strippable = [&](char32_t c) {
    return custom ? std::find(set.begin(), set.end(), c) != set.end() : is_py_space(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strippable(cps[b])) ++b;
  if (right)
    while (e > b && strippable(cps[e - 1])) --e;
  return utf8_encode(cps, b, e);
}

// Unicode simple case mapping through glibc's C.UTF-8 tables (ASCII only if that locale is
// missing). Python's full mappings that change length (German sharp s to "SS") are not applied.
locale_t utf8_locale() {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

char32_t to_upper(char32_t c) {
  if (c < 0x80) return static_cast<char32_t>(std::toupper(static_cast<int>(c)));
  locale_t loc = utf8_locale();
  return loc ? static_cast<char32_t>(towupper_l(static_cast<wint_t>(c), loc)) : c;
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return static_cast<char32_t>(std::tolower(static_cast<int>(c)));
  locale_t loc = utf8_locale();
  return loc ? static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), loc)) : c;
}

bool is_cased(char32_t c) { return to_upper(c) != c || to_lower(c) != c; }

enum class Case { upper, lower, title, capitalize };

// Title case differs from upper case only for the Latin digraphs (U+01C4..U+01CC, U+01F1..3).
char32_t to_title(char32_t c) {
  if (c >= 0x1C4 && c <= 0x1C6) return 0x1C5;
  if (c >= 0x1C7 && c <= 0x1C9) return 0x1C8;
  if (c >= 0x1CA && c <= 0x1CC) return 0x1CB;
  if (c >= 0x1F1 && c <= 0x1F3) return 0x1F2;
  return to_upper(c);
}

std::string change_case(std::string_view s, Case how) {
  CodePoints cps = utf8_decode(s);
  CodePoints out;
  out.reserve(cps.size());
  bool prev_cased = false;
  for (size_t i = 0; i < cps.size(); ++i) {
    char32_t c = cps[i];
    bool upper = how == Case::upper || (how == Case::title && !prev_cased) ||
                 (how == Case::capitalize && i == 0);
    if (how == Case::title) prev_cased = is_cased(c);
    if (!upper) {
      out.push_back(to_lower(c));
    } else if (c == 0xDF) {  // the one full (length-changing) mapping a chat is likely to meet
      out.push_back('S');
      out.push_back(how == Case::upper ? 'S' : 's');
    } else {
      out.push_back(how == Case::upper ? to_upper(c) : to_title(c));
    }
  }
  return utf8_encode(out, 0, out.size());
}

json::array split(std::string_view s, const Value* sep, int64_t maxsplit) {
  json::array out;
  if (sep == nullptr || sep->is_none()) {
    CodePoints cps = utf8_decode(s);
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i == cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && is_py_space(cps[e - 1])) --e;
        out.emplace_back(json::string(utf8_encode(cps, i, e)));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      out.emplace_back(json::string(utf8_encode(cps, i, j)));
      i = j;
    }
    return out;
  }
  if (!sep->is_string()) throw Error("split: separator must be a string");
  std::string_view d = sep->str();
  if (d.empty()) throw Error("empty separator");
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(d, pos);
    if (hit == std::string_view::npos ||
        (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
      out.emplace_back(json::string(s.substr(pos)));
      return out;
    }
    out.emplace_back(json::string(s.substr(pos, hit - pos)));
    pos = hit + d.size();
  }
}

std::string replace(std::string_view s, std::string_view from, std::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` around every character
    CodePoints cps = utf8_decode(s);
    int64_t done = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (i < cps.size()) out += utf8_encode(cps, i, i + 1);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

bool affix_match(std::string_view s, const Value& affix, bool prefix) {
  auto one = [&](const Value& a) {
    if (!a.is_string()) throw Error("startswith/endswith expects a string or a tuple of strings");
    std::string_view x = a.str();
    if (x.size() > s.size()) return false;
    return prefix ? s.substr(0, x.size()) == x : s.substr(s.size() - x.size()) == x;
  };
  if (affix.is_array()) {
    for (const auto& e : affix.json().get_array())
      if (one(Value(e))) return true;
    return false;
  }
  return one(affix);
}

// str.format with "{}" / "{0}" / "{name}" fields and "{{" "}}" escapes.
std::string format(std::string_view fmt, const std::vector<Value>& args, const Kwargs& kwargs) {
  std::string out;
  size_t next_auto = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') { out += '{'; ++i; continue; }
    if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') { out += '}'; ++i; continue; }
    if (c != '{') { out += c; continue; }
    size_t close = fmt.find('}', i);
    if (close == std::string_view::npos) throw Error("format: single '{' encountered");
    std::string field(fmt.substr(i + 1, close - i - 1));
    const Value* v = nullptr;
    if (field.empty()) {
      if (next_auto < args.size()) v = &args[next_auto++];
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      if (k < args.size()) v = &args[k];
    } else {
      for (const auto& [name, val] : kwargs)
        if (name == field) v = &val;
    }
    if (v == nullptr) throw Error("format: no value for field '{" + field + "}'");
    out += to_str(*v);
    i = close;
  }
  return out;
}

const Value* kwarg(const Kwargs& kwargs, const char* name) {
  for (const auto& [k, v] : kwargs)
    if (k == name) return &v;
  return nullptr;
}

// Positional argument `i`, else keyword `name`, else null.
const Value* arg(const std::vector<Value>& args, const Kwargs& kwargs, size_t i, const char* name) {
  if (i < args.size()) return &args[i];
  return kwarg(kwargs, name);
}

// Attribute path "a.b" as selectattr/map take it.
Value attr_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = numeric ? get_item(cur, Value(json::value(std::stoll(part)))) : get_item(cur, str_value(part));
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

json::array as_list(const Value& v) {
  json::array out;
  for (auto& e : iterate(v)) out.push_back(e.to_json());
  return out;
}

Value filter_select(const Value& operand, std::vector<Value>& args, bool by_attr, bool keep) {
  json::array out;
  size_t first_test_arg = by_attr ? 1 : 0;
  std::string attr;
  if (by_attr) {
    if (args.empty() || !args[0].is_string()) throw Error("selectattr/rejectattr need an attribute name");
    attr = std::string(args[0].str());
  }
  std::string test;
  std::vector<Value> test_args;
  if (args.size() > first_test_arg) {
    if (!args[first_test_arg].is_string()) throw Error("select: the test name must be a string");
    test = std::string(args[first_test_arg].str());
    test_args.assign(args.begin() + static_cast<std::ptrdiff_t>(first_test_arg) + 1, args.end());
  }
  for (auto& item : iterate(operand)) {
    Value probe = by_attr ? attr_path(item, attr) : item;
    bool ok = test.empty() ? truthy(probe) : apply_test(test, probe, test_args);
    if (ok == keep) out.push_back(item.to_json());
  }
  return Value(json::value(std::move(out)));
}

}  // namespace

int64_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  if (v.is_string()) return static_cast<int64_t>(utf8_length(v.str()));
  if (v.is_array()) return static_cast<int64_t>(v.json().get_array().size());
  if (v.is_object()) return static_cast<int64_t>(v.json().get_object().size());
  if (v.is_ns()) return static_cast<int64_t>(v.ns()->attrs.size());
  throw Error("object of type '" + type_name(v) + "' has no len()");
}

std::vector<Value> iterate(const Value& v) {
  std::vector<Value> out;
  if (v.is_undefined()) return out;
  if (v.is_array()) {
    for (const auto& e : v.json().get_array()) out.emplace_back(e);
  } else if (v.is_object()) {
    for (const auto& kv : v.json().get_object()) out.push_back(str_value(std::string(kv.key())));
  } else if (v.is_string()) {
    CodePoints cps = utf8_decode(v.str());
    for (size_t i = 0; i < cps.size(); ++i) out.push_back(str_value(utf8_encode(cps, i, i + 1)));
  } else {
    throw Error("'" + type_name(v) + "' object is not iterable");
  }
  return out;
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) {
    throw Error("'" + (obj.undefined_name().empty() ? std::string("value") : obj.undefined_name()) +
                "' is undefined (reading attribute '" + name + "')");
  }
  if (obj.is_object()) {
    const auto& o = obj.json().get_object();
    auto it = o.find(name);
    if (it != o.end()) return Value(it->value());
  } else if (obj.is_ns()) {
    if (Value* v = obj.ns()->find(name)) return *v;
  }
  return Value::undefined(name);
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) {
    throw Error("'" + (obj.undefined_name().empty() ? std::string("value") : obj.undefined_name()) +
                "' is undefined (reading item " + repr(key) + ")");
  }
  if (obj.is_object() && key.is_string()) {
    const auto& o = obj.json().get_object();
    auto it = o.find(key.str());
    if (it != o.end()) return Value(it->value());
    return Value::undefined(std::string(key.str()));
  }
  if ((obj.is_array() || obj.is_string()) && key.is_int()) {
    int64_t i = key.as_int();
    if (obj.is_array()) {
      const auto& a = obj.json().get_array();
      int64_t n = static_cast<int64_t>(a.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined();
      return Value(a[static_cast<size_t>(i)]);
    }
    CodePoints cps = utf8_decode(obj.str());
    int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined();
    return str_value(utf8_encode(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1));
  }
  if (obj.is_ns() && key.is_string()) return get_attr(obj, std::string(key.str()));
  return Value::undefined();
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step_v) {
  auto part = [](const Value* v) { return v != nullptr && !v->is_none() && !v->is_undefined(); };
  int64_t step = part(step_v) ? step_v->as_int() : 1;
  if (step == 0) throw Error("slice step cannot be zero");
  CodePoints cps;
  int64_t n;
  if (obj.is_array()) {
    n = static_cast<int64_t>(obj.json().get_array().size());
  } else if (obj.is_string()) {
    cps = utf8_decode(obj.str());
    n = static_cast<int64_t>(cps.size());
  } else {
    throw Error("'" + type_name(obj) + "' object is not subscriptable");
  }
  // Python's slice.indices().
  int64_t lower = step > 0 ? 0 : -1, upper = step > 0 ? n : n - 1;
  auto clamp = [&](const Value* v, int64_t dflt) {
    if (!part(v)) return dflt;
    int64_t x = v->as_int();
    if (x < 0) x = std::max(x + n, lower);
    return std::min(x, upper);
  };
  int64_t b = clamp(start, step > 0 ? lower : upper);
  int64_t e = clamp(stop, step > 0 ? upper : lower);
  json::array items;
  std::string text;
  for (int64_t i = b; step > 0 ? i < e : i > e; i += step) {
    if (obj.is_array()) {
      items.push_back(obj.json().get_array()[static_cast<size_t>(i)]);
    } else {
      text += utf8_encode(cps, static_cast<size_t>(i), static_cast<size_t>(i) + 1);
    }
  }
  if (obj.is_array()) return Value(json::value(std::move(items)));
  return str_value(std::move(text));
}

bool call_method(const Value& obj, const std::string& name, std::vector<Value>& args,
                 Kwargs& kwargs, Value& result) {
  if (obj.is_string()) {
    std::string_view s = obj.str();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      result = str_value(strip(s, arg(args, kwargs, 0, "chars"), name != "rstrip", name != "lstrip"));
    } else if (name == "split") {
      const Value* max = arg(args, kwargs, 1, "maxsplit");
      result = Value(json::value(split(s, arg(args, kwargs, 0, "sep"), max ? max->as_int() : -1)));
    } else if (name == "startswith" || name == "endswith") {
      if (args.empty()) throw Error(name + "() takes at least 1 argument");
      result = Value(json::value(affix_match(s, args[0], name == "startswith")));
    } else if (name == "replace") {
      std::string a, b;
      if (args.size() < 2) throw Error("replace() takes at least 2 arguments");
      const Value* count = arg(args, kwargs, 2, "count");
      result = str_value(replace(s, require_str(args[0], "replace", a), require_str(args[1], "replace", b),
                                 count ? count->as_int() : -1));
    } else if (name == "upper" || name == "lower") {
      result = str_value(change_case(s, name == "upper" ? Case::upper : Case::lower));
    } else if (name == "title") {
      result = str_value(change_case(s, Case::title));
    } else if (name == "capitalize") {
      result = str_value(change_case(s, Case::capitalize));
    } else if (name == "format") {
      result = str_value(format(s, args, kwargs));
    } else if (name == "join") {
      if (args.empty()) throw Error("join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (auto& item : iterate(args[0])) {
        if (!item.is_string()) throw Error("sequence item: expected str instance, " + type_name(item) + " found");
        if (!first) out += s;
        first = false;
        out += item.str();
      }
      result = str_value(std::move(out));
    } else if (name == "find" || name == "count") {
      std::string sub;
      if (args.empty()) throw Error(name + "() takes at least 1 argument");
      require_str(args[0], name.c_str(), sub);
      if (name == "find") {
        size_t hit = s.find(sub);
        result = Value(json::value(hit == std::string_view::npos
                                       ? int64_t{-1}
                                       : static_cast<int64_t>(utf8_length(s.substr(0, hit)))));
      } else {
        int64_t n = 0;
        if (sub.empty()) {
          n = static_cast<int64_t>(utf8_length(s)) + 1;
        } else {
          for (size_t p = s.find(sub); p != std::string_view::npos; p = s.find(sub, p + sub.size())) ++n;
        }
        result = Value(json::value(n));
      }
    } else {
      return false;
    }
    return true;
  }
  if (obj.is_object()) {
    const auto& o = obj.json().get_object();
    if (name == "get") {
      if (args.empty()) throw Error("get expected at least 1 argument");
      Value found = args[0].is_string() ? get_item(obj, args[0]) : Value::undefined();
      result = !found.is_undefined() ? found : args.size() > 1 ? args[1] : Value(json::value(nullptr));
    } else if (name == "items") {
      json::array out;
      for (const auto& kv : o) out.push_back(json::array{json::string(kv.key()), kv.value()});
      result = Value(json::value(std::move(out)));
    } else if (name == "keys") {
      json::array out;
      for (const auto& kv : o) out.emplace_back(json::string(kv.key()));
      result = Value(json::value(std::move(out)));
    } else if (name == "values") {
      json::array out;
      for (const auto& kv : o) out.push_back(kv.value());
      result = Value(json::value(std::move(out)));
    } else {
      return false;
    }
    return true;
  }
  return false;
}

bool apply_test(const std::string& name, const Value& v, std::vector<Value>& args) {
  auto need = [&](size_t n) {
    if (args.size() < n) throw Error("test '" + name + "' needs an argument");
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_array() || v.is_object();
  if (name == "sequence") return v.is_string() || v.is_array() || v.is_object();
  if (name == "number") return v.is_number() || v.is_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_json() && v.json().is_double();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.json().get_bool();
  if (name == "false") return v.is_bool() && !v.json().get_bool();
  if (name == "callable") return v.is_callable();
  if (name == "even" || name == "odd") {
    if (!v.is_int()) throw Error("test '" + name + "' needs an integer");
    return (v.as_int() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    need(1);
    return args[0].as_int() != 0 && v.as_int() % args[0].as_int() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") { need(1); return equals(v, args[0]); }
  if (name == "ne" || name == "!=") { need(1); return !equals(v, args[0]); }
  if (name == "lt" || name == "lessthan" || name == "<") { need(1); return less_than(v, args[0]); }
  if (name == "gt" || name == "greaterthan" || name == ">") { need(1); return less_than(args[0], v); }
  if (name == "le" || name == "<=") { need(1); return !less_than(args[0], v); }
  if (name == "ge" || name == ">=") { need(1); return !less_than(v, args[0]); }
  if (name == "sameas") {
    need(1);
    const Value& o = args[0];
    if (v.is_json() && o.is_json() && v.json().kind() == o.json().kind() &&
        (v.is_none() || v.is_bool())) {
      return equals(v, o);
    }
    return v.is_undefined() && o.is_undefined();
  }
  if (name == "in") {
    need(1);
    const Value& c = args[0];
    if (c.is_string() && v.is_string()) return c.str().find(v.str()) != std::string_view::npos;
    for (auto& item : iterate(c))
      if (equals(item, v)) return true;
    return false;
  }
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    return v.str() == change_case(v.str(), name == "lower" ? Case::lower : Case::upper);
  }
  throw Error("no test named '" + name + "'");
}

Value apply_filter(const std::string& name, const Value& v, std::vector<Value>& args, Kwargs& kwargs) {
  if (name == "trim") return str_value(strip(to_str(v), arg(args, kwargs, 0, "chars"), true, true));
  if (name == "length" || name == "count") return Value(json::value(length(v)));
  if (name == "upper") return str_value(change_case(to_str(v), Case::upper));
  if (name == "lower") return str_value(change_case(to_str(v), Case::lower));
  if (name == "title") {
    // Jinja's filter (unlike str.title) starts words only after whitespace, '-', and ({[<.
    CodePoints cps = utf8_decode(to_str(v));
    bool word_start = true;
    for (auto& c : cps) {
      bool sep = is_py_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
      if (!sep) c = word_start ? to_title(c) : to_lower(c);
      word_start = sep;
    }
    return str_value(utf8_encode(cps, 0, cps.size()));
  }
  if (name == "capitalize") return str_value(change_case(to_str(v), Case::capitalize));
  if (name == "string") return str_value(to_str(v));
  if (name == "safe") return v;
  if (name == "default" || name == "d") {
    const Value* dflt = arg(args, kwargs, 0, "default_value");
    const Value* boolean = arg(args, kwargs, 1, "boolean");
    bool use_default = v.is_undefined() || (boolean != nullptr && truthy(*boolean) && !truthy(v));
    if (!use_default) return v;
    return dflt != nullptr ? *dflt : str_value("");
  }
  if (name == "first" || name == "last") {
    std::vector<Value> items = iterate(v);
    if (items.empty()) return Value::undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const Value* sep = arg(args, kwargs, 0, "d");
    const Value* attr = arg(args, kwargs, 1, "attribute");
    std::string out;
    bool first = true;
    for (auto& item : iterate(v)) {
      if (!first && sep != nullptr) out += to_str(*sep);
      first = false;
      out += to_str(attr != nullptr ? attr_path(item, to_str(*attr)) : item);
    }
    return str_value(std::move(out));
  }
  if (name == "replace") {
    if (args.size() < 2) throw Error("replace needs two arguments");
    const Value* count = arg(args, kwargs, 2, "count");
    return str_value(replace(to_str(v), to_str(args[0]), to_str(args[1]),
                             count != nullptr && !count->is_none() ? count->as_int() : -1));
  }
  if (name == "tojson") {
    const Value* indent = arg(args, kwargs, 0, "indent");
    int n = indent != nullptr && !indent->is_none() ? static_cast<int>(indent->as_int()) : -1;
    return str_value(to_json_text(v.to_json(), n));
  }
  if (name == "int") {
    if (v.is_number() || v.is_bool()) return Value(json::value(v.as_int()));
    const Value* dflt = arg(args, kwargs, 0, "default");
    if (v.is_string()) {
      std::string s = strip(v.str(), nullptr, true, true);
      try {
        size_t used = 0;
        double d = std::stod(s, &used);
        if (used == s.size()) return Value(json::value(static_cast<int64_t>(d)));
      } catch (const std::exception&) {
      }
    }
    return dflt != nullptr ? *dflt : Value(json::value(int64_t{0}));
  }
  if (name == "float") {
    if (v.is_number() || v.is_bool()) return Value(json::value(v.as_double()));
    if (v.is_string()) {
      try {
        return Value(json::value(std::stod(std::string(v.str()))));
      } catch (const std::exception&) {
      }
    }
    const Value* dflt = arg(args, kwargs, 0, "default");
    return dflt != nullptr ? *dflt : Value(json::value(0.0));
  }
  if (name == "list") return Value(json::value(as_list(v)));
  if (name == "reverse") {
    if (v.is_string()) return get_slice(v, nullptr, nullptr, &(args.emplace_back(json::value(-1))));
    json::array a = as_list(v);
    std::reverse(a.begin(), a.end());
    return Value(json::value(std::move(a)));
  }
  if (name == "abs") {
    if (v.is_json() && v.json().is_double()) return Value(json::value(std::fabs(v.as_double())));
    return Value(json::value(std::llabs(v.as_int())));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value(json::value(json::array{}));
    if (!v.is_object()) throw Error("items filter expects a mapping, got " + type_name(v));
    Value result;
    std::vector<Value> none;
    call_method(v, "items", none, kwargs, result);
    return result;
  }
  if (name == "selectattr" || name == "rejectattr")
    return filter_select(v, args, true, name == "selectattr");
  if (name == "select" || name == "reject") return filter_select(v, args, false, name == "select");
  if (name == "map") {
    json::array out;
    const Value* attr = kwarg(kwargs, "attribute");
    const Value* dflt = kwarg(kwargs, "default");
    for (auto& item : iterate(v)) {
      if (attr != nullptr) {
        Value got = attr_path(item, to_str(*attr));
        if (got.is_undefined() && dflt != nullptr) got = *dflt;
        out.push_back(got.to_json());
      } else {
        if (args.empty() || !args[0].is_string()) throw Error("map needs a filter name or attribute=");
        std::vector<Value> rest(args.begin() + 1, args.end());
        Kwargs none;
        out.push_back(apply_filter(std::string(args[0].str()), item, rest, none).to_json());
      }
    }
    return Value(json::value(std::move(out)));
  }
  throw Error("no filter named '" + name + "'");
}

void add_globals(std::map<std::string, Value>& globals) {
  auto def = [&](const std::string& name, std::function<Value(std::vector<Value>&, Kwargs&)> fn) {
    globals[name] = Value::from_callable(std::make_shared<Callable>(Callable{name, std::move(fn)}));
  };
  def("raise_exception", [](std::vector<Value>& args, Kwargs&) -> Value {
    throw TemplateError(args.empty() ? std::string() : to_str(args[0]));
  });
  def("namespace", [](std::vector<Value>& args, Kwargs& kwargs) {
    auto ns = std::make_shared<Namespace>();
    for (auto& a : args) {
      if (!a.is_object()) throw Error("namespace() takes keyword arguments or a dict");
      for (const auto& kv : a.json().get_object()) ns->set(std::string(kv.key()), Value(kv.value()));
    }
    for (auto& [k, val] : kwargs) ns->set(k, val);
    return Value::from_ns(ns);
  });
  def("strftime_now", [](std::vector<Value>& args, Kwargs&) {
    if (args.empty() || !args[0].is_string()) throw Error("strftime_now needs a format string");
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[256];
    size_t n = std::strftime(buf, sizeof buf, std::string(args[0].str()).c_str(), &local);
    return str_value(std::string(buf, n));
  });
  def("range", [](std::vector<Value>& args, Kwargs&) {
    int64_t start = 0, stop = 0, step = 1;
    if (args.size() == 1) {
      stop = args[0].as_int();
    } else if (args.size() >= 2) {
      start = args[0].as_int();
      stop = args[1].as_int();
      if (args.size() > 2) step = args[2].as_int();
    }
    if (step == 0) throw Error("range() arg 3 must not be zero");
    // Bounded: range(10**12) would exhaust memory (templates are data, not trusted code). Counted
    // in 128 bits so that no start + k * step overflows.
    constexpr __int128 kMaxRange = 1 << 20;
    const __int128 span = step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
    const __int128 mag = step > 0 ? static_cast<__int128>(step) : -static_cast<__int128>(step);
    const __int128 count = span <= 0 ? 0 : (span + mag - 1) / mag;
    if (count > kMaxRange) throw Error("range() of more than " + std::to_string(static_cast<int64_t>(kMaxRange)) + " items");
    json::array out;
    out.reserve(static_cast<std::size_t>(count));
    for (__int128 k = 0; k < count; ++k) out.emplace_back(static_cast<int64_t>(start + k * step));
    return Value(json::value(std::move(out)));
  });
  def("dict", [](std::vector<Value>& args, Kwargs& kwargs) {
    json::object out;
    if (!args.empty() && args[0].is_object()) out = args[0].json().get_object();
    for (auto& [k, val] : kwargs) out[k] = val.to_json();
    return Value(json::value(std::move(out)));
  });
}

}  // namespace dpa::text::jinja
