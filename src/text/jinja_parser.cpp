// Recursive-descent parser for the Jinja2 subset of chat templates, following Jinja's operator
// precedence: or < and < not < comparisons < + - < ~ < * / // % < ** < unary < filters/tests.
#include "text/jinja_parser.h"

#include <algorithm>

#include "text/jinja_lexer.h"

namespace dpa::text::jinja {

namespace {

using TK = Token::Kind;

class Parser {
 public:
  explicit Parser(std::vector<Segment> segments) : segs_(std::move(segments)) {}

  Body parse_all() {
    std::string found;
    Body body = parse_body({}, found, 0, 0, "");
    return body;
  }

 private:
  // ---- statements ------------------------------------------------------------------------

  // Parses nodes until a statement whose keyword is in `stops`; that segment stays current
  // (its keyword consumed) and `found` names it. Reaching the end with `stops` non-empty is an
  // error that points at the opening tag.
  Body parse_body(const std::vector<std::string>& stops, std::string& found, int open_line,
                  int open_column, const std::string& opener) {
    const Nest nest(*this, open_line, open_column);
    Body body;
    while (seg_ < segs_.size()) {
      Segment& seg = segs_[seg_];
      if (seg.kind == Segment::Kind::text) {
        auto node = make_node(Node::Kind::text, seg.line, seg.column);
        node->text = seg.text;
        body.push_back(std::move(node));
        ++seg_;
        continue;
      }
      tok_ = 0;
      if (seg.kind == Segment::Kind::output) {
        auto node = make_node(Node::Kind::output, seg.line, seg.column);
        node->expr = parse_expr();
        expect_end();
        body.push_back(std::move(node));
        ++seg_;
        continue;
      }
      const Token& kw = peek();
      if (kw.kind != TK::name) error(kw, "expected a statement name after '{%'");
      if (std::find(stops.begin(), stops.end(), kw.text) != stops.end()) {
        found = kw.text;
        ++tok_;
        return body;
      }
      parse_statement(body);
    }
    if (!stops.empty()) {
      syntax_error(open_line, open_column,
                   "'" + opener + "' is never closed (expected '{% " + stops.back() + " %}')");
    }
    return body;
  }

  void parse_statement(Body& body) {
    const Token kw = next();
    const std::string& k = kw.text;
    if (k == "if") {
      body.push_back(parse_if(kw));
    } else if (k == "for") {
      body.push_back(parse_for(kw));
    } else if (k == "set") {
      body.push_back(parse_set(kw));
    } else if (k == "macro") {
      body.push_back(parse_macro(kw));
    } else if (k == "break" || k == "continue") {
      body.push_back(make_node(k == "break" ? Node::Kind::break_loop : Node::Kind::continue_loop,
                               kw.line, kw.column));
      expect_end();
      ++seg_;
    } else if (k == "generation") {
      // HF's AssistantTracker marks assistant spans; rendering just emits the body.
      expect_end();
      ++seg_;
      std::string found;
      Body inner = parse_body({"endgeneration"}, found, kw.line, kw.column, "generation");
      expect_end();
      ++seg_;
      for (auto& n : inner) body.push_back(std::move(n));
    } else if (k.rfind("end", 0) == 0 || k == "elif" || k == "else") {
      error(kw, "unexpected '" + k + "'");
    } else {
      error(kw, "unknown statement '" + k + "'");
    }
  }

  NodePtr parse_if(const Token& kw) {
    auto node = make_node(Node::Kind::if_chain, kw.line, kw.column);
    ExprPtr cond = parse_expr();
    while (true) {
      expect_end();
      ++seg_;
      std::string found;
      Body body = parse_body({"elif", "else", "endif"}, found, kw.line, kw.column, "if");
      node->branches.emplace_back(std::move(cond), std::move(body));
      if (found == "elif") {
        cond = parse_expr();
        continue;
      }
      if (found == "else") {
        expect_end();
        ++seg_;
        Body else_body = parse_body({"endif"}, found, kw.line, kw.column, "if");
        node->branches.emplace_back(nullptr, std::move(else_body));
      }
      expect_end();
      ++seg_;
      return node;
    }
  }

  NodePtr parse_for(const Token& kw) {
    auto node = make_node(Node::Kind::for_loop, kw.line, kw.column);
    node->targets = parse_targets();
    expect_name("in");
    node->expr = parse_expr(/*with_cond=*/false);
    if (peek_name("if")) {
      ++tok_;
      node->filter = parse_expr(/*with_cond=*/false);
    }
    if (peek_name("recursive")) error(peek(), "recursive loops are not supported");
    expect_end();
    ++seg_;
    std::string found;
    node->body = parse_body({"else", "endfor"}, found, kw.line, kw.column, "for");
    if (found == "else") {
      expect_end();
      ++seg_;
      node->else_body = parse_body({"endfor"}, found, kw.line, kw.column, "for");
    }
    expect_end();
    ++seg_;
    return node;
  }

  NodePtr parse_set(const Token& kw) {
    auto node = make_node(Node::Kind::set, kw.line, kw.column);
    node->targets = parse_targets();
    if (node->targets.size() == 1 && peek_op(".")) {
      ++tok_;
      const Token& attr = next();
      if (attr.kind != TK::name) error(attr, "expected an attribute name after '.'");
      node->attr = attr.text;
    }
    if (peek().kind == TK::end && node->attr.empty() && node->targets.size() == 1) {
      node->kind = Node::Kind::set_block;
      ++seg_;
      std::string found;
      node->body = parse_body({"endset"}, found, kw.line, kw.column, "set");
      expect_end();
      ++seg_;
      return node;
    }
    expect_op("=");
    node->expr = parse_expr();
    if (peek_op(",")) {  // {% set a = 1, 2 %} builds a tuple
      auto tuple = make_expr(Expr::Kind::tuple, peek());
      tuple->children.push_back(std::move(node->expr));
      while (peek_op(",")) {
        ++tok_;
        if (peek().kind == TK::end) break;
        tuple->children.push_back(parse_expr());
      }
      node->expr = std::move(tuple);
    }
    expect_end();
    ++seg_;
    return node;
  }

  NodePtr parse_macro(const Token& kw) {
    auto node = make_node(Node::Kind::macro, kw.line, kw.column);
    const Token& name = next();
    if (name.kind != TK::name) error(name, "expected a macro name");
    node->name = name.text;
    expect_op("(");
    while (!peek_op(")")) {
      const Token& param = next();
      if (param.kind != TK::name) error(param, "expected a parameter name");
      ExprPtr def;
      if (peek_op("=")) {
        ++tok_;
        def = parse_expr();
      }
      node->params.emplace_back(param.text, std::move(def));
      if (!peek_op(",")) break;
      ++tok_;
    }
    expect_op(")");
    expect_end();
    ++seg_;
    std::string found;
    node->body = parse_body({"endmacro"}, found, kw.line, kw.column, "macro");
    expect_end();
    ++seg_;
    return node;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = peek_op("(");
    if (paren) ++tok_;
    while (true) {
      const Token& t = next();
      if (t.kind != TK::name) error(t, "expected a variable name");
      names.push_back(t.text);
      if (!peek_op(",")) break;
      ++tok_;
    }
    if (paren) expect_op(")");
    return names;
  }

  // ---- expressions -----------------------------------------------------------------------

  ExprPtr parse_expr(bool with_cond = true) {
    const Nest nest(*this, peek().line, peek().column);
    ExprPtr e = parse_or();
    if (with_cond && peek_name("if")) {
      auto cond = make_expr(Expr::Kind::cond, next());
      ExprPtr test = parse_or();
      ExprPtr otherwise;
      if (peek_name("else")) {
        ++tok_;
        otherwise = parse_expr();
      }
      cond->children.push_back(std::move(test));
      cond->children.push_back(std::move(e));
      cond->children.push_back(std::move(otherwise));
      return cond;
    }
    return e;
  }

  ExprPtr binary(const Token& at, std::string op, ExprPtr l, ExprPtr r) {
    auto e = make_expr(Expr::Kind::binary, at);
    e->name = std::move(op);
    e->children.push_back(std::move(l));
    e->children.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (peek_name("or")) {
      const Token at = next();
      e = binary(at, "or", std::move(e), parse_and());
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (peek_name("and")) {
      const Token at = next();
      e = binary(at, "and", std::move(e), parse_not());
    }
    return e;
  }

  ExprPtr parse_not() {
    const Nest nest(*this, peek().line, peek().column);
    if (peek_name("not")) {
      auto e = make_expr(Expr::Kind::unary, next());
      e->name = "not";
      e->children.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      const Token& t = peek();
      static const char* const ops[] = {"==", "!=", "<", ">", "<=", ">="};
      if (t.kind == TK::op && std::find(std::begin(ops), std::end(ops), t.text) != std::end(ops)) {
        const Token at = next();
        e = binary(at, at.text, std::move(e), parse_math1());
      } else if (peek_name("in")) {
        const Token at = next();
        e = binary(at, "in", std::move(e), parse_math1());
      } else if (peek_name("not") && tok_ + 1 < tokens().size() &&
                 tokens()[tok_ + 1].kind == TK::name && tokens()[tok_ + 1].text == "in") {
        const Token at = next();
        ++tok_;
        e = binary(at, "not in", std::move(e), parse_math1());
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (peek_op("+") || peek_op("-")) {
      const Token at = next();
      e = binary(at, at.text, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (peek_op("~")) {
      const Token at = next();
      e = binary(at, "~", std::move(e), parse_math2());
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (peek_op("*") || peek_op("/") || peek_op("//") || peek_op("%")) {
      const Token at = next();
      e = binary(at, at.text, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (peek_op("**")) {
      const Token at = next();
      e = binary(at, "**", std::move(e), parse_unary(true));
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    const Nest nest(*this, peek().line, peek().column);
    ExprPtr e;
    if (peek_op("-") || peek_op("+")) {
      e = make_expr(Expr::Kind::unary, peek());
      e->name = next().text;
      e->children.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters_and_tests(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token t = next();
    switch (t.kind) {
      case TK::name: {
        if (t.text == "true" || t.text == "True") return literal(t, true);
        if (t.text == "false" || t.text == "False") return literal(t, false);
        if (t.text == "none" || t.text == "None") return literal(t, nullptr);
        auto e = make_expr(Expr::Kind::name, t);
        e->name = t.text;
        return e;
      }
      case TK::string: {
        std::string s = t.text;
        while (peek().kind == TK::string) s += next().text;  // "a" "b" is "ab"
        return literal(t, boost::json::string(s));
      }
      case TK::integer:
        return literal(t, t.int_value);
      case TK::floating:
        return literal(t, t.float_value);
      case TK::op:
        if (t.text == "(") {
          if (peek_op(")")) {
            ++tok_;
            return make_expr(Expr::Kind::tuple, t);
          }
          ExprPtr e = parse_expr();
          if (peek_op(",")) {
            auto tuple = make_expr(Expr::Kind::tuple, t);
            tuple->children.push_back(std::move(e));
            while (peek_op(",")) {
              ++tok_;
              if (peek_op(")")) break;
              tuple->children.push_back(parse_expr());
            }
            e = std::move(tuple);
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          auto e = make_expr(Expr::Kind::list, t);
          while (!peek_op("]")) {
            e->children.push_back(parse_expr());
            if (!peek_op(",")) break;
            ++tok_;
          }
          expect_op("]");
          return e;
        }
        if (t.text == "{") {
          auto e = make_expr(Expr::Kind::dict, t);
          while (!peek_op("}")) {
            e->children.push_back(parse_expr());
            expect_op(":");
            e->children.push_back(parse_expr());
            if (!peek_op(",")) break;
            ++tok_;
          }
          expect_op("}");
          return e;
        }
        break;
      case TK::end:
        error(t, "unexpected end of tag, expected an expression");
    }
    error(t, "unexpected '" + t.text + "'");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (peek_op(".")) {
        const Token at = next();
        const Token name = next();
        if (name.kind == TK::name) {
          auto a = make_expr(Expr::Kind::attr, at);
          a->name = name.text;
          a->children.push_back(std::move(e));
          e = std::move(a);
        } else if (name.kind == TK::integer) {
          auto a = make_expr(Expr::Kind::index, at);
          a->children.push_back(std::move(e));
          a->children.push_back(literal(name, name.int_value));
          e = std::move(a);
        } else {
          error(name, "expected an attribute name after '.'");
        }
      } else if (peek_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (peek_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const Token at = next();  // [
    ExprPtr parts[3];
    bool is_slice = false;
    if (!peek_op(":")) parts[0] = parse_expr();
    if (peek_op(":")) {
      is_slice = true;
      ++tok_;
      if (!peek_op("]") && !peek_op(":")) parts[1] = parse_expr();
      if (peek_op(":")) {
        ++tok_;
        if (!peek_op("]")) parts[2] = parse_expr();
      }
    }
    expect_op("]");
    auto e = make_expr(is_slice ? Expr::Kind::slice : Expr::Kind::index, at);
    e->children.push_back(std::move(obj));
    e->children.push_back(std::move(parts[0]));
    if (is_slice) {
      e->children.push_back(std::move(parts[1]));
      e->children.push_back(std::move(parts[2]));
    }
    return e;
  }

  // Parses "(args, name=value)" into e->children (after the first) and e->kwargs.
  void parse_args(Expr& e) {
    expect_op("(");
    while (!peek_op(")")) {
      if (peek().kind == TK::name && tok_ + 1 < tokens().size() &&
          tokens()[tok_ + 1].kind == TK::op && tokens()[tok_ + 1].text == "=") {
        std::string key = next().text;
        ++tok_;
        e.kwargs.emplace_back(std::move(key), parse_expr());
      } else {
        if (!e.kwargs.empty()) error(peek(), "positional argument follows keyword argument");
        e.children.push_back(parse_expr());
      }
      if (!peek_op(",")) break;
      ++tok_;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make_expr(Expr::Kind::call, peek());
    e->children.push_back(std::move(callee));
    parse_args(*e);
    return e;
  }

  ExprPtr parse_filters_and_tests(ExprPtr e) {
    while (true) {
      if (peek_op("|")) {
        ++tok_;
        const Token name = next();
        if (name.kind != TK::name) error(name, "expected a filter name after '|'");
        auto f = make_expr(Expr::Kind::filter, name);
        f->name = name.text;
        f->children.push_back(std::move(e));
        if (peek_op("(")) parse_args(*f);
        e = std::move(f);
      } else if (peek_name("is")) {
        ++tok_;
        bool negated = false;
        if (peek_name("not")) {
          ++tok_;
          negated = true;
        }
        const Token name = next();
        if (name.kind != TK::name) error(name, "expected a test name after 'is'");
        auto t = make_expr(Expr::Kind::test, name);
        t->name = name.text;
        t->negated = negated;
        t->children.push_back(std::move(e));
        const Token& p = peek();
        if (peek_op("(")) {
          parse_args(*t);
        } else if ((p.kind == TK::name || p.kind == TK::string || p.kind == TK::integer ||
                    p.kind == TK::floating || peek_op("[") || peek_op("{")) &&
                   !peek_name("else") && !peek_name("or") && !peek_name("and")) {
          t->children.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (peek_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  // ---- token helpers ---------------------------------------------------------------------

  const std::vector<Token>& tokens() const { return segs_[seg_].tokens; }
  const Token& peek() const { return tokens()[tok_]; }
  const Token& next() {
    const Token& t = tokens()[tok_];
    if (t.kind != TK::end) ++tok_;
    return t;
  }
  bool peek_op(const char* op) const { return peek().kind == TK::op && peek().text == op; }
  bool peek_name(const char* name) const { return peek().kind == TK::name && peek().text == name; }
  void expect_op(const char* op) {
    if (!peek_op(op)) error(peek(), std::string("expected '") + op + "'" + found_text());
    ++tok_;
  }
  void expect_name(const char* name) {
    if (!peek_name(name)) error(peek(), std::string("expected '") + name + "'" + found_text());
    ++tok_;
  }
  void expect_end() {
    if (peek().kind != TK::end) error(peek(), "unexpected '" + peek().text + "', expected end of tag");
  }
  std::string found_text() const {
    return peek().kind == TK::end ? ", found end of tag" : ", found '" + peek().text + "'";
  }
  [[noreturn]] void error(const Token& t, const std::string& message) const {
    syntax_error(t.line, t.column, message);
  }

  static NodePtr make_node(Node::Kind kind, int line, int column) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = line;
    n->column = column;
    return n;
  }
  static ExprPtr make_expr(Expr::Kind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }
  static ExprPtr literal(const Token& at, boost::json::value v) {
    auto e = make_expr(Expr::Kind::literal, at);
    e->value = Value(std::move(v));
    return e;
  }

  // Nesting of blocks and expressions, bounded so that a hostile template cannot exhaust the
  // stack of the parser or of the evaluator that walks the same tree.
  static constexpr int kMaxNesting = 256;
  struct Nest {
    Parser& p;
    Nest(Parser& parser, int line, int column) : p(parser) {
      if (++p.nesting_ > kMaxNesting) {
        --p.nesting_;
        syntax_error(line, column, "the template nests deeper than " + std::to_string(kMaxNesting) + " levels");
      }
    }
    ~Nest() { --p.nesting_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
  };
  int nesting_ = 0;

  std::vector<Segment> segs_;
  size_t seg_ = 0;
  size_t tok_ = 0;
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(lex(source)).parse_all(); }

}  // namespace dpa::text::jinja
