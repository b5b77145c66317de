// Builtins of the chat-template interpreter: filters, tests, Python str/dict methods, globals,
// and Jinja's attribute/item lookup rules. Errors are thrown as dpa::Error without a position;
// the evaluator adds it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "text/jinja_value.h"

namespace dpa::text::jinja {

// obj.name: a dict key or namespace attribute; undefined when absent.
Value get_attr(const Value& obj, const std::string& name);
// obj[key]: list/str index (negative counts from the end), dict key; undefined when absent.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step] on a list or str; null parts are Python's defaults.
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

Value apply_filter(const std::string& name, const Value& operand, std::vector<Value>& args,
                   Kwargs& kwargs);
bool apply_test(const std::string& name, const Value& operand, std::vector<Value>& args);
// Calls obj.name(args) when obj is a str/dict/list with such a method; false if there is none.
bool call_method(const Value& obj, const std::string& name, std::vector<Value>& args,
                 Kwargs& kwargs, Value& result);
// raise_exception, namespace, strftime_now, range, dict.
void add_globals(std::map<std::string, Value>& globals);

// Items of an iterable as Jinja's for loop sees them: list elements, dict keys, str characters.
std::vector<Value> iterate(const Value& v);
// Python len().
int64_t length(const Value& v);

}  // namespace dpa::text::jinja
