// Runtime values of the chat-template interpreter: Boost.JSON data plus Jinja's undefined,
// namespace() objects and callables, with Python's truthiness, str(), repr() and comparisons.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace dpa::text::jinja {

// A complete error message (with its template position, or raised by the template through
// raise_exception): the evaluator passes it on unchanged instead of wrapping it again.
class TemplateError : public Error {
 public:
  using Error::Error;
};

class Value;
struct Namespace;
struct Callable;

// Keyword arguments keep their call order so a builtin can report the first unknown one.
using Kwargs = std::vector<std::pair<std::string, Value>>;

class Value {
 public:
  enum class Kind { undefined, json, ns, callable };

  Value() = default;  // undefined
  Value(boost::json::value v) : kind_(Kind::json), json_(std::move(v)) {}  // NOLINT: implicit
  static Value undefined(std::string name = {});
  static Value from_ns(std::shared_ptr<Namespace> ns);
  static Value from_callable(std::shared_ptr<Callable> fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_json() const { return kind_ == Kind::json; }
  bool is_ns() const { return kind_ == Kind::ns; }
  bool is_callable() const { return kind_ == Kind::callable; }
  bool is_none() const { return is_json() && json_.is_null(); }
  bool is_string() const { return is_json() && json_.is_string(); }
  bool is_array() const { return is_json() && json_.is_array(); }
  bool is_object() const { return is_json() && json_.is_object(); }
  bool is_bool() const { return is_json() && json_.is_bool(); }
  bool is_int() const { return is_json() && (json_.is_int64() || json_.is_uint64()); }
  bool is_number() const { return is_json() && (is_int() || json_.is_double()); }

  const boost::json::value& json() const { return json_; }
  boost::json::value& json() { return json_; }
  const std::shared_ptr<Namespace>& ns() const { return ns_; }
  const std::shared_ptr<Callable>& fn() const { return fn_; }
  // For messages about an undefined value: the name that was looked up.
  const std::string& undefined_name() const { return undefined_name_; }

  std::string_view str() const { return json_.as_string(); }
  int64_t as_int() const;       // ints and bools
  double as_double() const;     // any number or bool
  // The JSON form of this value, for storing it in a list or dict; undefined becomes null.
  boost::json::value to_json() const&;
  boost::json::value to_json() &&;  // a temporary's JSON moves out instead of being copied

 private:
  Kind kind_ = Kind::undefined;
  boost::json::value json_;
  std::shared_ptr<Namespace> ns_;
  std::shared_ptr<Callable> fn_;
  std::string undefined_name_;
};

// namespace(...) objects: the one mutable thing a template can carry out of a loop.
struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
  Value* find(const std::string& name);
  void set(const std::string& name, Value v);
};

// A function callable from a template (builtin global or macro).
struct Callable {
  std::string name;
  std::function<Value(std::vector<Value>&, Kwargs&)> call;
};

// Python truthiness.
bool truthy(const Value& v);
// Python str() as Jinja prints it ("" for undefined, None/True/False, repr for containers).
std::string to_str(const Value& v);
// Python repr().
std::string repr(const Value& v);
std::string repr_json(const boost::json::value& v);
// Python's float repr ("1.0", "1e+16", "0.1").
std::string float_repr(double d);
// json.dumps(v, ensure_ascii=False, indent=indent) as HF's tojson filter does; indent < 0: none.
std::string to_json_text(const boost::json::value& v, int indent);
// Python ==.
bool equals(const Value& a, const Value& b);
// Python <: numbers, strings, lists; throws dpa::Error for other types.
bool less_than(const Value& a, const Value& b);
// Name of the Python type, for error messages.
std::string type_name(const Value& v);

// UTF-8 helpers: Python strings count code points.
std::vector<char32_t> utf8_decode(std::string_view s);
std::string utf8_encode(const std::vector<char32_t>& cps, size_t begin, size_t end);
size_t utf8_length(std::string_view s);

}  // namespace dpa::text::jinja
