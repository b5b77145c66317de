// Tree-walking evaluator for chat templates: Jinja scoping (a for loop body is its own scope,
// so only namespace() attributes leak out; macros see the template's top level), loop
// variables, break/continue, and Python operator semantics.
#include "text/jinja_eval.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

#include "text/jinja_builtins.h"

namespace dpa::text::jinja {

namespace json = boost::json;

namespace {

// What a value costs to hold, in bytes: 64 a node (a Boost.JSON value is 16 bytes; an array or
// object slot, its table and the allocation around it bring a nested one to about 64) plus its
// strings and keys, nested values included (an explicit stack: values built at run time may nest
// deeper than the call stack allows).
constexpr uint64_t kNode = 64;
uint64_t held_bytes(const json::value& root) {
  uint64_t n = 0;
  std::vector<const json::value*> todo{&root};
  while (!todo.empty()) {
    const json::value* v = todo.back();
    todo.pop_back();
    n += kNode;
    if (v->is_string()) {
      n += v->get_string().size();
    } else if (v->is_array()) {
      for (const auto& x : v->get_array()) todo.push_back(&x);
    } else if (v->is_object()) {
      for (const auto& kv : v->get_object()) {
        n += kv.key().size();
        todo.push_back(&kv.value());
      }
    }
  }
  return n;
}

class Evaluator {
 public:
  explicit Evaluator(const json::object& context) {
    add_globals(globals_);
    frames_.emplace_back();
    for (const auto& kv : context) frames_[0].vars[std::string(kv.key())] = Value(kv.value());
  }

  std::string run(const Body& body) {
    std::string out;
    exec(body, out);
    return out;
  }

 private:
  enum class Flow { normal, break_loop, continue_loop };
  static constexpr int kMaxMacroDepth = 64;
  static constexpr uint64_t kMaxRepeat = 1 << 24;  // bytes one repetition may build
  // Bytes one render may build by concatenation, repetition, list and dict literals and output: a
  // template that loops over large strings ends with an error instead of running for minutes.
  // Lists count what they hold (held_bytes), nested lists included: [[2] * 90000] * 9000 copies
  // 810 million values, not 9000.
  static constexpr uint64_t kMaxBuilt = uint64_t{1} << 26;
  uint64_t built_ = 0;
  void charge(uint64_t n) {
    built_ += n;
    if (built_ > kMaxBuilt)
      throw Error("template builds more than " + std::to_string(kMaxBuilt) + " bytes of strings and lists");
  }
  int macro_depth_ = 0;
  struct Frame {
    std::map<std::string, Value> vars;
    bool isolated = false;  // a macro call: names resolve here, then at the top level
  };

  // ---- statements ------------------------------------------------------------------------

  Flow exec(const Body& body, std::string& out) {
    for (const auto& node : body) {
      Flow flow = exec_node(*node, out);
      if (flow != Flow::normal) return flow;
    }
    return Flow::normal;
  }

  Flow exec_node(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::text:
        charge(n.text.size());
        out += n.text;
        return Flow::normal;
      case Node::Kind::output:
      {
        std::string v = to_str(eval(*n.expr));
        charge(v.size());
        out += v;
      }
        return Flow::normal;
      case Node::Kind::if_chain:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || truthy(eval(*cond))) return exec(body, out);
        }
        return Flow::normal;
      case Node::Kind::for_loop:
        exec_for(n, out);
        return Flow::normal;
      case Node::Kind::set:
        exec_set(n, eval(*n.expr));
        return Flow::normal;
      case Node::Kind::set_block: {
        std::string captured;
        exec(n.body, captured);
        exec_set(n, Value(json::value(json::string(captured))));
        return Flow::normal;
      }
      case Node::Kind::macro:
        define_macro(n);
        return Flow::normal;
      case Node::Kind::break_loop:
        return Flow::break_loop;
      case Node::Kind::continue_loop:
        return Flow::continue_loop;
    }
    return Flow::normal;
  }

  void bind_targets(const Node& n, const std::vector<std::string>& targets, Value v) {
    if (targets.size() == 1) {
      frames_.back().vars[targets[0]] = std::move(v);
      return;
    }
    std::vector<Value> parts = iterate(v);
    if (parts.size() != targets.size()) {
      fail(n.line, n.column, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                 std::to_string(targets.size()) + " variables");
    }
    for (size_t i = 0; i < targets.size(); ++i) frames_.back().vars[targets[i]] = parts[i];
  }

  void exec_set(const Node& n, Value v) {
    if (n.attr.empty()) {
      bind_targets(n, n.targets, std::move(v));
      return;
    }
    Value target = lookup(n.targets[0]);
    if (!target.is_ns()) {
      fail(n.line, n.column, "cannot assign attribute '" + n.attr + "' on '" + n.targets[0] +
                                 "', which is not a namespace()");
    }
    target.ns()->set(n.attr, std::move(v));
  }

  void exec_for(const Node& n, std::string& out) {
    Value iterable = eval(*n.expr);
    std::vector<Value> items;
    try {
      items = iterate(iterable);
    } catch (const Error& e) {
      fail(n.line, n.column, e.what());
    }
    if (n.filter) {  // `for x in xs if cond`: filtered before loop.* counts anything
      std::vector<Value> kept;
      for (auto& item : items) {
        frames_.emplace_back();
        bind_targets(n, n.targets, item);
        bool keep = truthy(eval(*n.filter));
        frames_.pop_back();
        if (keep) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec(n.else_body, out);
      return;
    }
    const auto count = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < count; ++i) {
      frames_.emplace_back();
      bind_targets(n, n.targets, items[static_cast<size_t>(i)]);
      json::object loop;
      loop["index"] = i + 1;
      loop["index0"] = i;
      loop["revindex"] = count - i;
      loop["revindex0"] = count - i - 1;
      loop["first"] = i == 0;
      loop["last"] = i == count - 1;
      loop["length"] = count;
      loop["depth"] = 1;
      loop["depth0"] = 0;
      if (i > 0) loop["previtem"] = items[static_cast<size_t>(i - 1)].to_json();
      if (i + 1 < count) loop["nextitem"] = items[static_cast<size_t>(i + 1)].to_json();
      frames_.back().vars["loop"] = Value(json::value(std::move(loop)));
      Flow flow = exec(n.body, out);
      frames_.pop_back();
      if (flow == Flow::break_loop) break;
    }
  }

  void define_macro(const Node& n) {
    const Node* macro = &n;
    auto call = [this, macro](std::vector<Value>& args, Kwargs& kwargs) -> Value {
      if (args.size() > macro->params.size())
        throw Error("macro '" + macro->name + "' takes at most " +
                    std::to_string(macro->params.size()) + " arguments");
      // A macro that calls itself without end would overflow the stack (found by fuzz_chat_template).
      if (macro_depth_ >= kMaxMacroDepth)
        throw Error("macro '" + macro->name + "': calls nested deeper than " + std::to_string(kMaxMacroDepth));
      struct DepthGuard {
        int& d;
        explicit DepthGuard(int& x) : d(x) { ++d; }
        ~DepthGuard() { --d; }
      } guard(macro_depth_);
      frames_.emplace_back();
      frames_.back().isolated = true;
      for (size_t i = 0; i < macro->params.size(); ++i) {
        const auto& [pname, dflt] = macro->params[i];
        Value v = Value::undefined(pname);
        bool given = false;
        if (i < args.size()) {
          v = args[i];
          given = true;
        }
        for (auto& [k, kv] : kwargs) {
          if (k == pname) {
            v = kv;
            given = true;
          }
        }
        if (!given && dflt) v = eval(*dflt);
        frames_.back().vars[pname] = v;
      }
      std::string out;
      try {
        exec(macro->body, out);
      } catch (...) {
        frames_.pop_back();
        throw;
      }
      frames_.pop_back();
      return Value(json::value(json::string(out)));
    };
    frames_.back().vars[n.name] =
        Value::from_callable(std::make_shared<Callable>(Callable{n.name, call}));
  }

  // ---- expressions -----------------------------------------------------------------------

  Value lookup(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > 0;) {
      auto it = frames_[i].vars.find(name);
      if (it != frames_[i].vars.end()) return it->second;
      if (frames_[i].isolated) i = 1;  // next probe is frames_[0], the top level
    }
    auto it = globals_.find(name);
    if (it != globals_.end()) return it->second;
    return Value::undefined(name);
  }

  [[noreturn]] static void fail(int line, int column, const std::string& message) {
    throw TemplateError("chat template error at line " + std::to_string(line) + ", column " +
                        std::to_string(column) + ": " + message);
  }

  Value eval(const Expr& e) {
    try {
      return eval_inner(e);
    } catch (const TemplateError&) {
      throw;
    } catch (const std::exception& err) {
      fail(e.line, e.column, err.what());
    }
  }

  void eval_args(const Expr& e, std::vector<Value>& args, Kwargs& kwargs) {
    for (size_t i = 1; i < e.children.size(); ++i) args.push_back(e.children[i] ? eval(*e.children[i]) : Value());
    for (const auto& [k, v] : e.kwargs) kwargs.emplace_back(k, eval(*v));
  }

  Value eval_inner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::literal:
        return e.value;
      case Expr::Kind::name:
        return lookup(e.name);
      case Expr::Kind::list:
      case Expr::Kind::tuple: {
        json::array a;
        for (const auto& c : e.children) {
          json::value v = eval(*c).to_json();  // a namespace() becomes the object it holds
          charge(held_bytes(v));
          a.push_back(std::move(v));
        }
        return Value(json::value(std::move(a)));
      }
      case Expr::Kind::dict: {
        json::object o;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value k = eval(*e.children[i]);
          if (!k.is_string()) throw Error("dict keys must be strings here, got " + type_name(k));
          json::value v = eval(*e.children[i + 1]).to_json();
          charge(k.str().size() + held_bytes(v));
          o[k.str()] = std::move(v);
        }
        return Value(json::value(std::move(o)));
      }
      case Expr::Kind::attr:
        return get_attr(eval(*e.children[0]), e.name);
      case Expr::Kind::index:
        return get_item(eval(*e.children[0]), eval(*e.children[1]));
      case Expr::Kind::slice: {
        Value obj = eval(*e.children[0]);
        Value parts[3];
        for (int i = 0; i < 3; ++i)
          if (e.children[i + 1]) parts[i] = eval(*e.children[i + 1]);
        return get_slice(obj, e.children[1] ? &parts[0] : nullptr, e.children[2] ? &parts[1] : nullptr,
                         e.children[3] ? &parts[2] : nullptr);
      }
      case Expr::Kind::call:
        return eval_call(e);
      case Expr::Kind::filter: {
        Value operand = eval(*e.children[0]);
        std::vector<Value> args;
        Kwargs kwargs;
        eval_args(e, args, kwargs);
        return apply_filter(e.name, operand, args, kwargs);
      }
      case Expr::Kind::test: {
        Value operand = eval(*e.children[0]);
        std::vector<Value> args;
        Kwargs kwargs;
        eval_args(e, args, kwargs);
        return Value(json::value(apply_test(e.name, operand, args) != e.negated));
      }
      case Expr::Kind::unary: {
        Value v = eval(*e.children[0]);
        if (e.name == "not") return Value(json::value(!truthy(v)));
        if (!v.is_number() && !v.is_bool()) throw Error("bad operand type for unary " + e.name + ": '" + type_name(v) + "'");
        if (e.name == "+") return v;
        if (v.json().is_double()) return Value(json::value(-v.as_double()));
        const int64_t i = v.as_int();
        if (i == INT64_MIN) throw Error("integer overflow");
        return Value(json::value(-i));
      }
      case Expr::Kind::binary:
        return eval_binary(e);
      case Expr::Kind::cond:
        if (truthy(eval(*e.children[0]))) return eval(*e.children[1]);
        return e.children[2] ? eval(*e.children[2]) : Value::undefined();
    }
    return Value::undefined();
  }

  Value eval_call(const Expr& e) {
    const Expr& callee = *e.children[0];
    std::vector<Value> args;
    Kwargs kwargs;
    Value fn;
    if (callee.kind == Expr::Kind::attr) {
      Value obj = eval(*callee.children[0]);
      eval_args(e, args, kwargs);
      Value result;
      if (call_method(obj, callee.name, args, kwargs, result)) return result;
      fn = get_attr(obj, callee.name);
    } else {
      fn = eval(callee);
      eval_args(e, args, kwargs);
    }
    if (!fn.is_callable()) {
      std::string what = callee.kind == Expr::Kind::name || callee.kind == Expr::Kind::attr ? callee.name : "value";
      if (fn.is_undefined()) throw Error("'" + what + "' is undefined");
      throw Error("'" + what + "' (" + type_name(fn) + ") is not callable");
    }
    return fn.fn()->call(args, kwargs);
  }

  Value eval_binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and" || op == "or") {
      Value l = eval(*e.children[0]);
      if (truthy(l) == (op == "or")) return l;
      return eval(*e.children[1]);
    }
    Value l = eval(*e.children[0]);
    Value r = eval(*e.children[1]);
    if (op == "~") {
      std::string v = to_str(l) + to_str(r);
      charge(v.size());
      return Value(json::value(json::string(v)));
    }
    if (op == "==") return Value(json::value(equals(l, r)));
    if (op == "!=") return Value(json::value(!equals(l, r)));
    if (op == "<") return Value(json::value(less_than(l, r)));
    if (op == ">") return Value(json::value(less_than(r, l)));
    if (op == "<=") return Value(json::value(!less_than(r, l)));
    if (op == ">=") return Value(json::value(!less_than(l, r)));
    if (op == "in" || op == "not in") {
      if (!(r.is_string() || r.is_array() || r.is_object()))
        throw Error("argument of type '" + type_name(r) + "' is not iterable");
      if (r.is_string() && !l.is_string())
        throw Error("'in <string>' requires string as left operand, not " + type_name(l));
      std::vector<Value> container{r};
      return Value(json::value(apply_test("in", l, container) == (op == "in")));
    }
    return arithmetic(op, l, r);
  }

  Value arithmetic(const std::string& op, const Value& l, const Value& r) {
    auto numeric = [](const Value& v) { return v.is_number() || v.is_bool(); };
    if (op == "+") {
      if (l.is_string() && r.is_string()) {
        charge(l.str().size() + r.str().size());
        return Value(json::value(json::string(std::string(l.str()) + std::string(r.str()))));
      }
      if (l.is_array() && r.is_array()) {
        charge(held_bytes(l.json()) + held_bytes(r.json()));
        json::array a = l.json().get_array();
        for (const auto& x : r.json().get_array()) a.push_back(x);
        return Value(json::value(std::move(a)));
      }
    }
    if (op == "*" && ((l.is_string() || l.is_array()) != (r.is_string() || r.is_array()))) {
      const Value& seq = l.is_string() || l.is_array() ? l : r;
      const Value& times = &seq == &l ? r : l;
      if (times.is_int() || times.is_bool()) {
        int64_t n = times.as_int();
        // Bounded output: "x" * 10**12 would exhaust memory.
        const uint64_t unit = seq.is_string() ? seq.str().size()
                              : seq.json().get_array().empty() ? 0 : held_bytes(seq.json()) - kNode;
        if (n > 0 && unit > 0 && static_cast<uint64_t>(n) > kMaxRepeat / unit)
          throw Error("sequence repetition builds more than " + std::to_string(kMaxRepeat) + " bytes");
        if (n <= 0 || unit == 0)  // "" * 10**15 is "" at once, not 10**15 appends of nothing
          return seq.is_string() ? Value(json::value(json::string())) : Value(json::value(json::array()));
        charge(static_cast<uint64_t>(n) * unit);
        if (seq.is_string()) {
          std::string out;
          for (int64_t i = 0; i < n; ++i) out += seq.str();
          return Value(json::value(json::string(out)));
        }
        json::array out;
        for (int64_t i = 0; i < n; ++i)
          for (const auto& x : seq.json().get_array()) out.push_back(x);
        return Value(json::value(std::move(out)));
      }
    }
    if (!numeric(l) || !numeric(r)) {
      throw Error("unsupported operand type(s) for " + op + ": '" + type_name(l) + "' and '" +
                  type_name(r) + "'");
    }
    bool ints = !l.json().is_double() && !r.json().is_double();
    if (op == "/") {
      if (r.as_double() == 0) throw Error("division by zero");
      return Value(json::value(l.as_double() / r.as_double()));
    }
    if (ints) {
      int64_t a = l.as_int(), b = r.as_int();
      int64_t res = 0;
      // 64-bit integers, not Python's unbounded ones: overflow is an error (and UB in C++).
      if (op == "+") return __builtin_add_overflow(a, b, &res) ? throw Error("integer overflow") : Value(json::value(res));
      if (op == "-") return __builtin_sub_overflow(a, b, &res) ? throw Error("integer overflow") : Value(json::value(res));
      if (op == "*") return __builtin_mul_overflow(a, b, &res) ? throw Error("integer overflow") : Value(json::value(res));
      if (op == "//" || op == "%") {
        if (b == 0) throw Error("integer division or modulo by zero");
        if (a == INT64_MIN && b == -1) throw Error("integer overflow");
        int64_t q = a / b, m = a % b;
        if (m != 0 && ((m < 0) != (b < 0))) {
          --q;
          m += b;
        }
        return Value(json::value(op == "//" ? q : m));
      }
      if (op == "**" && b >= 0) {  // by squaring: (-1) ** 2**62 takes 62 steps, not 2**62
        int64_t p = 1, x = a;
        for (uint64_t e = static_cast<uint64_t>(b); e; e >>= 1) {
          if ((e & 1) && __builtin_mul_overflow(p, x, &p)) throw Error("integer overflow");
          // Squaring overflows only where the result would (x**2 is still to be multiplied in).
          if (e > 1 && __builtin_mul_overflow(x, x, &x)) throw Error("integer overflow");
        }
        return Value(json::value(p));
      }
    }
    double a = l.as_double(), b = r.as_double();
    if (op == "+") return Value(json::value(a + b));
    if (op == "-") return Value(json::value(a - b));
    if (op == "*") return Value(json::value(a * b));
    if (op == "**") return Value(json::value(std::pow(a, b)));
    if (op == "//" || op == "%") {
      if (b == 0) throw Error("float division or modulo by zero");
      double q = std::floor(a / b);
      return Value(json::value(op == "//" ? q : a - q * b));
    }
    throw Error("unknown operator '" + op + "'");
  }

  std::vector<Frame> frames_;
  std::map<std::string, Value> globals_;
};

}  // namespace

std::string render(const Body& body, const json::object& context) {
  return Evaluator(context).run(body);
}

}  // namespace dpa::text::jinja
