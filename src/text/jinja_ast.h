// Syntax tree of a parsed chat template: expressions and statements, built by jinja_parser,
// walked by jinja_eval.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace dpa::text::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,   // value
    name,      // name
    list,      // children: items
    tuple,     // children: items (a list at run time)
    dict,      // children: key0, value0, key1, value1, ...
    attr,      // children[0].name
    index,     // children[0][children[1]]
    slice,     // children[0][children[1]:children[2]:children[3]], parts may be null
    call,      // children[0](children[1..], kwargs)
    filter,    // children[0] | name(children[1..], kwargs)
    test,      // children[0] is [not] name(children[1..])
    unary,     // name ("not", "-", "+") children[0]
    binary,    // children[0] name children[1]; name is the operator, "not in" included
    cond,      // children[1] if children[0] else children[2] (children[2] may be null)
  };
  Kind kind = Kind::literal;
  int line = 0;
  int column = 0;
  Value value;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    text,       // text
    output,     // {{ expr }}
    if_chain,   // branches: (condition, body); a null condition is the else
    for_loop,   // for targets in expr [if filter]: body [else: else_body]
    set,        // set targets = expr, or set targets[0].attr = expr
    set_block,  // set targets[0] %}body{% endset
    macro,      // macro name(params): body
    break_loop,
    continue_loop,
  };
  Kind kind = Kind::text;
  int line = 0;
  int column = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters with defaults
};

}  // namespace dpa::text::jinja
