// The parser of grammar.h's GBNF text into flat rules, and the checks that make the recognizer
// safe: every referenced rule defined, `root` present, every rule reachable from root able to
// end, no left recursion. Groups and repetitions become rules of their own here (`x*` is
// R ::= x R | "", `x{2,4}` is x x O1 with O1 ::= x O2 | "", O2 ::= x | ""), so the recognizer
// knows only bytes, classes, rule calls and ends.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "engine/grammar.h"

namespace dpa::engine::grammar_detail {
namespace {

constexpr uint32_t kMaxCode = 0x10ffff;
using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;
using Seq = std::vector<Element>;  // a sequence of symbols (never an end)

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Rules run() {
    if (s_.size() > Grammar::kMaxText)
      throw Error(fmt::format("the grammar is {} bytes; at most {} are taken", s_.size(), Grammar::kMaxText));
    for (;;) {
      skip_space();
      if (at_end()) break;
      const std::size_t at = i_;
      if (!name_char(peek())) {
        if (peek() == ')') fail(at, "')' closes no '('");
        if (peek() == '|') fail(at, "'|' outside a rule (a rule is `name ::= ...`)");
        fail(at, fmt::format("expected a rule name, found {}", shown(at)));
      }
      const std::string name = read_name();
      skip_space();
      if (s_.substr(i_, 3) != "::=") fail(i_, fmt::format("expected '::=' after the rule name '{}'", name));
      i_ += 3;
      const int32_t r = rule_id(name, at);
      if (defined_at_[static_cast<std::size_t>(r)] >= 0)
        fail(at, fmt::format("rule '{}' is already defined at {}", name,
                             where(static_cast<std::size_t>(defined_at_[static_cast<std::size_t>(r)]))));
      defined_at_[static_cast<std::size_t>(r)] = static_cast<int64_t>(at);
      current_ = name;
      set_body(r, alternatives(0));
    }
    // Undefined rules, the earliest reference first.
    int64_t bad = -1;
    for (const auto& [name, id] : ids_) {
      const auto r = static_cast<std::size_t>(id);
      if (defined_at_[r] < 0 && (bad < 0 || first_ref_[r] < first_ref_[static_cast<std::size_t>(bad)]))
        bad = id;
    }
    if (bad >= 0)
      fail(static_cast<std::size_t>(first_ref_[static_cast<std::size_t>(bad)]),
           fmt::format("rule '{}' is not defined", origin_[static_cast<std::size_t>(bad)]));
    const auto root = ids_.find("root");
    if (root == ids_.end()) throw Error("the grammar has no 'root' rule (the start rule: root ::= ...)");
    return lower(root->second);
  }

 private:
  // ---- reading
  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[i_]; }

  std::string where(std::size_t at) const {
    std::size_t line = 1, col = 1;
    for (std::size_t k = 0; k < at && k < s_.size(); ++k) {
      if (s_[k] == '\n')
        ++line, col = 1;
      else if ((static_cast<uint8_t>(s_[k]) & 0xc0) != 0x80)
        ++col;  // columns count characters
    }
    return fmt::format("line {}, column {}", line, col);
  }
  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw Error(where(at) + ": " + what);
  }
  std::string shown(std::size_t at) const {
    if (at >= s_.size()) return "the end of the grammar";
    const auto c = static_cast<uint8_t>(s_[at]);
    if (c >= 0x21 && c < 0x7f) return fmt::format("'{}'", static_cast<char>(c));
    if (c == ' ') return "' '";
    return fmt::format("byte 0x{:02x}", c);
  }

  // Spaces, tabs, newlines and # comments.
  void skip_space() {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        ++i_;
      } else if (c == '#') {
        while (!at_end() && peek() != '\n') ++i_;
      } else {
        break;
      }
    }
  }

  std::string read_name() {
    const std::size_t b = i_;
    while (!at_end() && name_char(peek())) ++i_;
    return std::string(s_.substr(b, i_ - b));
  }

  // Whether a rule definition (`name ::=`) starts here: where a sequence ends.
  bool rule_starts_here() {
    const std::size_t save = i_;
    read_name();
    skip_space();
    const bool yes = s_.substr(i_, 3) == "::=";
    i_ = save;
    return yes;
  }

  // One UTF-8 encoded code point of the text (raw, in a literal or class).
  uint32_t read_utf8() {
    const std::size_t at = i_;
    const auto c = static_cast<uint8_t>(s_[i_]);
    const int n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
    if (n == 0 || i_ + static_cast<std::size_t>(n) > s_.size()) fail(at, "the grammar is not valid UTF-8");
    uint32_t cp = n == 1 ? c : c & (0x7fu >> n);
    for (int k = 1; k < n; ++k) {
      const auto b = static_cast<uint8_t>(s_[i_ + static_cast<std::size_t>(k)]);
      if ((b & 0xc0) != 0x80) fail(at, "the grammar is not valid UTF-8");
      cp = cp << 6 | (b & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > kMaxCode || (cp >= 0xd800 && cp <= 0xdfff))
      fail(at, "the grammar is not valid UTF-8");
    i_ += static_cast<std::size_t>(n);
    return cp;
  }

  uint32_t hex_escape(std::size_t at, int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      const char c = peek();
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) fail(at, fmt::format("the escape needs {} hex digits", digits));
      v = v << 4 | static_cast<uint32_t>(d);
      ++i_;
    }
    if (v > kMaxCode) fail(at, fmt::format("U+{:X} is past U+10FFFF", v));
    if (v >= 0xd800 && v <= 0xdfff) fail(at, fmt::format("U+{:04X} is a surrogate, not a character", v));
    return v;
  }

  // A character of a literal or class: raw or escaped.
  uint32_t read_char() {
    const std::size_t at = i_;
    if (peek() != '\\') return read_utf8();
    ++i_;
    if (at_end()) fail(at, "'\\' at the end of the grammar");
    const char e = s_[i_++];
    switch (e) {
      case 'n':
        return '\n';
      case 't':
        return '\t';
      case 'r':
        return '\r';
      case 'f':
        return '\f';
      case 'v':
        return '\v';
      case 'a':
        return '\a';
      case 'b':
        return '\b';
      case '0':
        return 0;
      case '\\':
      case '"':
      case '\'':
      case '[':
      case ']':
      case '-':
      case '^':
      case '/':
        return static_cast<uint8_t>(e);
      case 'x':
        return hex_escape(at, 2);
      case 'u':
        return hex_escape(at, 4);
      case 'U':
        return hex_escape(at, 8);
      default:
        if (static_cast<uint8_t>(e) >= 0x21 && static_cast<uint8_t>(e) < 0x7f)
          fail(at, fmt::format("unknown escape '\\{}'", e));
        fail(at, "'\\' before a character that has no escape");
    }
  }

  // ---- building
  int32_t rule_id(const std::string& name, std::size_t at) {
    const auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    const int32_t r = new_rule(name);
    ids_.emplace(name, r);
    first_ref_[static_cast<std::size_t>(r)] = static_cast<int64_t>(at);  // where it is first named
    return r;
  }

  int32_t new_rule(const std::string& origin) {
    if (static_cast<int64_t>(origin_.size()) >= Grammar::kMaxRules)
      throw Error(
          fmt::format("the grammar needs more than {} rules once its groups and repetitions are expanded",
                      Grammar::kMaxRules));
    origin_.push_back(origin);
    bodies_.emplace_back();
    defined_at_.push_back(-1);
    first_ref_.push_back(-1);
    return static_cast<int32_t>(origin_.size() - 1);
  }

  // Symbols are counted as they are made (and an alternative's end with its rule), so that a
  // grammar past kMaxElements stops as it gets there, not once built.
  void count_elements(int64_t k) {
    n_elements_ += k;
    if (n_elements_ > Grammar::kMaxElements)
      throw Error(
          fmt::format("the grammar is too large once its repetitions are expanded (more than {} symbols)",
                      Grammar::kMaxElements));
  }
  void emit(Seq& seq, const Element& e) {
    count_elements(1);
    seq.push_back(e);
  }

  void set_body(int32_t r, std::vector<Seq> alts) {
    count_elements(static_cast<int64_t>(alts.size()));
    bodies_[static_cast<std::size_t>(r)] = std::move(alts);
  }

  static Element ref(int32_t r) { return Element{Kind::rule, 0, r}; }

  // A rule of its own for a sequence that must be one symbol (a group under a repetition).
  Element as_symbol(Seq seq) {
    if (seq.size() == 1) return seq[0];
    const int32_t r = new_rule(current_);
    set_body(r, {std::move(seq)});
    count_elements(1);  // the call
    return ref(r);
  }

  // x{m,n} (n < 0: no bound) as symbols: m copies of x, then x* or a chain of optional x's.
  // x{m,n} (n < 0: no bound) as symbols: m copies of x, then x* or a chain of optional x's. x was
  // counted once already.
  Seq repeat(const Element& x, int64_t m, int64_t n) {
    Seq out;
    for (int64_t k = 0; k < m; ++k) emit(out, x);
    if (n < 0) {
      const int32_t r = new_rule(current_);
      Seq loop;
      emit(loop, x), emit(loop, ref(r));
      set_body(r, {std::move(loop), Seq{}});
      emit(out, ref(r));
    } else if (n > m) {
      int32_t next = -1;  // built from the innermost
      for (int64_t k = m; k < n; ++k) {
        const int32_t r = new_rule(current_);
        Seq more;
        emit(more, x);
        if (next >= 0) emit(more, ref(next));
        set_body(r, {std::move(more), Seq{}});
        next = r;
      }
      emit(out, ref(next));
    }
    count_elements(-1);  // x itself, now inside the copies
    return out;
  }

  int32_t add_class(Ranges r, bool negated, std::size_t at) {
    std::sort(r.begin(), r.end());
    Ranges merged;
    for (const auto& x : r) {
      if (!merged.empty() && x.first <= merged.back().second + 1)
        merged.back().second = std::max(merged.back().second, x.second);
      else
        merged.push_back(x);
    }
    if (negated) {
      Ranges out;
      uint32_t lo = 0;
      for (const auto& [a, b] : merged) {
        if (a > lo) out.push_back({lo, a - 1});
        lo = b + 1;
      }
      if (lo <= kMaxCode) out.push_back({lo, kMaxCode});
      merged = std::move(out);
    }
    CharClass k;
    for (const auto& [a, b] : merged) {
      for (uint32_t c = a; c <= std::min<uint32_t>(b, 0x7f); ++c) k.ascii[c >> 6] |= uint64_t{1} << (c & 63);
      const uint32_t lo = std::max<uint32_t>(a, 0x80);
      if (lo > b) continue;
      // Surrogates are not characters: out of every class.
      if (lo < 0xd800 && b >= 0xd800) {
        k.ranges.push_back({lo, 0xd7ff});
        if (b > 0xdfff) k.ranges.push_back({0xe000, b});
      } else if (lo >= 0xd800 && lo <= 0xdfff) {
        if (b > 0xdfff) k.ranges.push_back({0xe000, b});
      } else {
        k.ranges.push_back({lo, b});
      }
    }
    if (k.ascii[0] == 0 && k.ascii[1] == 0 && k.ranges.empty())
      fail(at, "the character class matches no character");
    classes_.push_back(std::move(k));
    return static_cast<int32_t>(classes_.size() - 1);
  }

  // ---- the grammar's syntax
  std::vector<Seq> alternatives(int depth) {
    std::vector<Seq> alts;
    for (;;) {
      alts.push_back(sequence(depth));
      skip_space();
      if (peek() != '|') return alts;
      ++i_;
    }
  }

  Seq sequence(int depth) {
    Seq seq;
    for (;;) {
      skip_space();
      if (at_end() || peek() == '|' || peek() == ')') return seq;
      if (name_char(peek()) && rule_starts_here()) return seq;
      term(seq, depth);
    }
  }

  void term(Seq& seq, int depth) {
    const std::size_t at = i_;
    Seq prim;
    const char c = peek();
    if (c == '"') {
      ++i_;
      std::string bytes;
      for (;;) {
        if (at_end()) fail(at, "the string literal is not closed");
        if (peek() == '"') break;
        append_utf8(read_char(), bytes);
      }
      ++i_;
      for (char b : bytes) emit(prim, Element{Kind::byte, static_cast<uint8_t>(b), 0});
    } else if (c == '[') {
      ++i_;
      const bool negated = peek() == '^';
      if (negated) ++i_;
      Ranges r;
      for (;;) {
        if (at_end()) fail(at, "the character class is not closed");
        if (peek() == ']') break;
        const std::size_t from = i_;
        const uint32_t lo = read_char();
        uint32_t hi = lo;
        if (peek() == '-' && i_ + 1 < s_.size() && s_[i_ + 1] != ']') {
          ++i_;
          hi = read_char();
          if (hi < lo) fail(from, fmt::format("the range U+{:04X}-U+{:04X} is reversed", lo, hi));
        }
        r.push_back({lo, hi});
      }
      ++i_;
      emit(prim, Element{Kind::cls, 0, add_class(std::move(r), negated, at)});
    } else if (c == '.') {
      // llama.cpp reads it as any character, xgrammar (vLLM's and SGLang's) as a rule name's
      // character: a grammar meaning either would be misread by the other, so neither is taken.
      fail(at, "'.' is not taken (xgrammar, which vLLM and SGLang use, has no any-character symbol): write a class, "
               "e.g. [^\\n] or [\\x00-\\U0010FFFF]");
    } else if (c == '(') {
      if (depth + 1 > Grammar::kMaxNesting)
        fail(at, fmt::format("groups nest more than {} deep", Grammar::kMaxNesting));
      ++i_;
      std::vector<Seq> alts = alternatives(depth + 1);
      skip_space();
      if (peek() != ')')
        fail(i_, fmt::format("expected ')' to close the '(' at {}, found {}", where(at), shown(i_)));
      ++i_;
      if (alts.size() == 1) {
        prim = std::move(alts[0]);
      } else {
        const int32_t r = new_rule(current_);
        set_body(r, std::move(alts));
        emit(prim, ref(r));
      }
    } else if (name_char(c)) {
      emit(prim, ref(rule_id(read_name(), at)));
    } else {
      fail(at, fmt::format("unexpected {}", shown(at)));
    }
    // Postfix operators, each on what is before it.
    for (;;) {
      const std::size_t op_at = i_;
      skip_space();
      const char op = peek();
      int64_t m = 0, n = -1;
      if (op == '*') {
        ++i_;
      } else if (op == '+') {
        ++i_, m = 1;
      } else if (op == '?') {
        ++i_, n = 1;
      } else if (op == '{') {
        const std::size_t brace = i_++;
        m = count(brace);
        skip_space();
        if (peek() == ',') {
          ++i_;
          skip_space();
          n = peek() == '}' ? -1 : count(brace);
        } else {
          n = m;
        }
        skip_space();
        if (peek() != '}')
          fail(i_, fmt::format("expected '}}' to close the '{{' at {}, found {}", where(brace), shown(i_)));
        ++i_;
        if (n >= 0 && m > n)
          fail(brace, fmt::format("{{{},{}}}: the least count is above the greatest", m, n));
      } else {
        i_ = op_at;  // the space is the next symbol's
        break;
      }
      if (prim.empty()) continue;  // a repeated empty string is empty
      prim = repeat(as_symbol(std::move(prim)), m, n);
    }
    seq.insert(seq.end(), prim.begin(), prim.end());
  }

  int64_t count(std::size_t brace) {
    skip_space();
    if (peek() < '0' || peek() > '9')
      fail(i_, fmt::format("expected a count after the '{{' at {}", where(brace)));
    int64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + (peek() - '0');
      if (v > Grammar::kMaxRepeat)
        fail(brace, fmt::format("repetition counts are at most {}", Grammar::kMaxRepeat));
      ++i_;
    }
    return v;
  }

  // ---- the flat form, and its checks
  Rules lower(int32_t root) {
    Rules out;
    out.root = root;
    out.classes = std::move(classes_);
    out.origin = std::move(origin_);
    out.alt_begin.reserve(bodies_.size() + 1);
    out.elements.reserve(static_cast<std::size_t>(n_elements_));
    for (std::size_t r = 0; r < bodies_.size(); ++r) {
      out.alt_begin.push_back(static_cast<int32_t>(out.alts.size()));
      for (const Seq& a : bodies_[r]) {
        out.alts.push_back(static_cast<int32_t>(out.elements.size()));
        out.elements.insert(out.elements.end(), a.begin(), a.end());
        out.elements.push_back(Element{Kind::end, 0, static_cast<int32_t>(r)});
      }
    }
    out.alt_begin.push_back(static_cast<int32_t>(out.alts.size()));
    check(out);
    return out;
  }

  // Every rule reachable from root can end, and none reaches itself before a character is read
  // through a call that is not its alternative's last symbol (such a call pushes a frame each
  // time round, so the recognizer's closure would not end; a last-symbol call pushes nothing).
  static void check(const Rules& g) {
    const std::size_t n = g.origin.size();
    auto alts_of = [&](std::size_t r) {
      return std::pair<std::size_t, std::size_t>(static_cast<std::size_t>(g.alt_begin[r]),
                                                 static_cast<std::size_t>(g.alt_begin[r + 1]));
    };
    std::vector<char> reach(n, 0);
    std::vector<int32_t> todo{g.root};
    reach[static_cast<std::size_t>(g.root)] = 1;
    while (!todo.empty()) {
      const auto r = static_cast<std::size_t>(todo.back());
      todo.pop_back();
      const auto [a0, a1] = alts_of(r);
      for (std::size_t a = a0; a < a1; ++a)
        for (auto p = static_cast<std::size_t>(g.alts[a]); g.elements[p].kind != Kind::end; ++p)
          if (g.elements[p].kind == Kind::rule && !reach[static_cast<std::size_t>(g.elements[p].arg)]) {
            reach[static_cast<std::size_t>(g.elements[p].arg)] = 1;
            todo.push_back(g.elements[p].arg);
          }
    }
    // Fixed points: a rule ends (derives some string) / derives the empty string when one of its
    // alternatives' symbols all do.
    // Linear in the grammar's size (a pass per change would be quadratic on a chain of rules
    // written outermost first): each alternative counts the calls not known yet, and a rule found
    // to end (or to derive "") counts down the alternatives that call it.
    std::vector<std::vector<int32_t>> callers(n);  // rule -> the alternatives calling it, once per call
    std::vector<int32_t> alt_rule(g.alts.size(), -1);
    for (std::size_t r = 0; r < n; ++r) {
      if (!reach[r]) continue;
      const auto [a0, a1] = alts_of(r);
      for (std::size_t a = a0; a < a1; ++a) {
        alt_rule[a] = static_cast<int32_t>(r);
        for (auto p = static_cast<std::size_t>(g.alts[a]); g.elements[p].kind != Kind::end; ++p)
          if (g.elements[p].kind == Kind::rule) callers[static_cast<std::size_t>(g.elements[p].arg)].push_back(static_cast<int32_t>(a));
      }
    }
    auto fixpoint = [&](bool want_empty) {
      constexpr int32_t kNever = INT32_MAX;  // holds a byte or class: never derives ""
      std::vector<char> ok(n, 0);
      std::vector<int32_t> missing(g.alts.size(), kNever), found;
      for (std::size_t a = 0; a < g.alts.size(); ++a) {
        if (alt_rule[a] < 0) continue;
        int32_t calls = 0;
        bool terminal = false;
        for (auto p = static_cast<std::size_t>(g.alts[a]); g.elements[p].kind != Kind::end; ++p) {
          if (g.elements[p].kind == Kind::rule) ++calls;
          else terminal = true;
        }
        missing[a] = want_empty && terminal ? kNever : calls;
        const auto r = static_cast<std::size_t>(alt_rule[a]);
        if (missing[a] == 0 && !ok[r]) ok[r] = 1, found.push_back(alt_rule[a]);
      }
      while (!found.empty()) {
        const auto r = static_cast<std::size_t>(found.back());
        found.pop_back();
        for (const int32_t a : callers[r]) {
          const auto up = static_cast<std::size_t>(alt_rule[static_cast<std::size_t>(a)]);
          if (missing[static_cast<std::size_t>(a)] != kNever && --missing[static_cast<std::size_t>(a)] == 0 && !ok[up])
            ok[up] = 1, found.push_back(static_cast<int32_t>(up));
        }
      }
      return ok;
    };
    const std::vector<char> ends = fixpoint(false), nullable = fixpoint(true);
    // A rule that never ends: named by one that calls itself where there is one (the cause, rather
    // than the rules that merely lead to it).
    int64_t dead = -1;
    for (std::size_t r = 0; r < n; ++r) {
      if (!reach[r] || ends[r]) continue;
      bool self = false;
      const auto [a0, a1] = alts_of(r);
      for (std::size_t a = a0; a < a1 && !self; ++a)
        for (auto p = static_cast<std::size_t>(g.alts[a]); g.elements[p].kind != Kind::end; ++p)
          self =
              self || (g.elements[p].kind == Kind::rule && static_cast<std::size_t>(g.elements[p].arg) == r);
      if (dead < 0 || self) dead = static_cast<int64_t>(r);
      if (self) break;
    }
    if (dead >= 0)
      throw Error(fmt::format(
          "rule '{}' matches no string: each of its alternatives (or of a group in it) leads back "
          "into itself or into another rule that never ends",
          g.origin[static_cast<std::size_t>(dead)]));
    // The calls that may come before any character: edges r -> callee, tail or not.
    struct Edge {
      int32_t to;
      bool tail;
    };
    std::vector<std::vector<Edge>> first(n);
    for (std::size_t r = 0; r < n; ++r) {
      if (!reach[r]) continue;
      const auto [a0, a1] = alts_of(r);
      for (std::size_t a = a0; a < a1; ++a)
        for (auto p = static_cast<std::size_t>(g.alts[a]); g.elements[p].kind == Kind::rule; ++p) {
          first[r].push_back({g.elements[p].arg, g.elements[p + 1].kind == Kind::end});
          if (!nullable[static_cast<std::size_t>(g.elements[p].arg)]) break;
        }
    }
    // Strongly connected components (Tarjan's, iterative): a non-tail edge inside one is a loop
    // that pushes.
    std::vector<int32_t> index(n, -1), low(n, 0), comp(n, -1), stack;
    std::vector<char> on_stack(n, 0);
    int32_t next_index = 0, n_comp = 0;
    struct Visit {
      int32_t r;
      std::size_t edge;
    };
    for (std::size_t s = 0; s < n; ++s) {
      if (!reach[s] || index[s] >= 0) continue;
      std::vector<Visit> path{{static_cast<int32_t>(s), 0}};
      index[s] = low[s] = next_index++;
      stack.push_back(static_cast<int32_t>(s)), on_stack[s] = 1;
      while (!path.empty()) {
        Visit& v = path.back();
        const auto r = static_cast<std::size_t>(v.r);
        if (v.edge < first[r].size()) {
          const auto t = static_cast<std::size_t>(first[r][v.edge++].to);
          if (index[t] < 0) {
            index[t] = low[t] = next_index++;
            stack.push_back(static_cast<int32_t>(t)), on_stack[t] = 1;
            path.push_back({static_cast<int32_t>(t), 0});
          } else if (on_stack[t]) {
            low[r] = std::min(low[r], index[t]);
          }
          continue;
        }
        if (low[r] == index[r]) {
          for (;;) {
            const auto t = static_cast<std::size_t>(stack.back());
            stack.pop_back(), on_stack[t] = 0, comp[t] = n_comp;
            if (t == r) break;
          }
          ++n_comp;
        }
        path.pop_back();
        if (!path.empty()) {
          const auto up = static_cast<std::size_t>(path.back().r);
          low[up] = std::min(low[up], low[r]);
        }
      }
    }
    for (std::size_t r = 0; r < n; ++r)
      for (const Edge& e : first[r])
        if (!e.tail && comp[r] == comp[static_cast<std::size_t>(e.to)]) {
          const std::string& a = g.origin[r];
          const std::string& b = g.origin[static_cast<std::size_t>(e.to)];
          throw Error(fmt::format(
              "rule '{}' is left-recursive: it can reach {} before reading a character; write the "
              "recursion as a repetition (e.g. expr ::= term (\"+\" term)* instead of expr ::= expr \"+\" "
              "term | term)",
              a, a == b ? "itself" : fmt::format("'{}' and come back to itself", b)));
        }
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string current_;  // the rule being defined (for the rules made inside it)
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<std::string> origin_;
  std::vector<std::vector<Seq>> bodies_;
  std::vector<int64_t> defined_at_, first_ref_;
  std::vector<CharClass> classes_;
  int64_t n_elements_ = 0;
};

}  // namespace

bool CharClass::intersects(uint32_t lo, uint32_t hi) const {
  // The first range that ends at or after lo.
  const auto it = std::lower_bound(ranges.begin(), ranges.end(), lo,
                                   [](const auto& r, uint32_t v) { return r.second < v; });
  return it != ranges.end() && it->first <= hi;
}

Rules parse(std::string_view text) {
  return Parser(text).run();
}

}  // namespace dpa::engine::grammar_detail
