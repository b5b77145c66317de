// An independent reference for the grammar tests: its own reader of the GBNF syntax (grammar.h)
// into a tree, and a memoized backtracking matcher over code points that decides whether a text
// is a string of the grammar and whether it is a prefix of one; byte strings are judged through
// their UTF-8 decoding, a final partial character by trying one character of each stretch of
// code points the grammar does not tell apart. Written for the tests' grammars (no left
// recursion, every rule able to end); it shares no code with src/engine/grammar*.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dpa::engine::test {

struct RefNode {
  enum Kind { kLit, kClass, kRef, kSeq, kAlt, kRep } kind = kSeq;
  std::vector<uint32_t> lit;                          // kLit
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // kClass
  bool negated = false;                               // kClass
  int rule = -1;                                      // kRef
  std::vector<int> kids;                              // kSeq, kAlt, kRep (one)
  int min = 0, max = -1;                              // kRep; max -1: no bound
  bool has(uint32_t c) const {
    bool in = false;
    for (const auto& [a, b] : ranges) in = in || (c >= a && c <= b);
    return in != negated;
  }
};

class RefGrammar {
 public:
  explicit RefGrammar(std::string_view text) : s_(text) {
    for (;;) {
      space();
      if (i_ >= s_.size()) break;
      const std::string name = ident();
      space();
      if (s_.substr(i_, 3) != "::=") throw std::runtime_error("reference: ::= expected");
      i_ += 3;
      body_.resize(std::max<std::size_t>(body_.size(), static_cast<std::size_t>(id(name)) + 1), -1);
      body_[static_cast<std::size_t>(id(name))] = alt();
    }
    root_ = id("root");
    body_.resize(names_.size(), -1);
    for (int b : body_)
      if (b < 0) throw std::runtime_error("reference: undefined rule");
  }
  const std::vector<RefNode>& nodes() const { return nodes_; }
  int body(int rule) const { return body_[static_cast<std::size_t>(rule)]; }
  int root() const { return root_; }
  int n_rules() const { return static_cast<int>(names_.size()); }

  // Code points that bound the stretches where every class and literal answers alike.
  std::vector<uint32_t> breakpoints() const {
    std::set<uint32_t> b = {0, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xe000, 0xffff, 0x10000, 0x10ffff};
    for (const RefNode& n : nodes_) {
      for (uint32_t c : n.lit) b.insert(c);
      for (const auto& [lo, hi] : n.ranges)
        for (uint32_t c : {lo ? lo - 1 : 0, lo, hi, hi + 1}) b.insert(c);
    }
    return {b.begin(), b.end()};
  }

 private:
  int add(RefNode n) {
    nodes_.push_back(std::move(n));
    return static_cast<int>(nodes_.size() - 1);
  }
  int id(const std::string& name) {
    for (std::size_t k = 0; k < names_.size(); ++k)
      if (names_[k] == name) return static_cast<int>(k);
    names_.push_back(name);
    return static_cast<int>(names_.size() - 1);
  }
  static bool word(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; }
  void space() {
    while (i_ < s_.size()) {
      if (s_[i_] == '#') {
        while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      } else if (std::isspace(static_cast<unsigned char>(s_[i_]))) {
        ++i_;
      } else {
        break;
      }
    }
  }
  std::string ident() {
    const std::size_t b = i_;
    while (i_ < s_.size() && word(s_[i_])) ++i_;
    if (b == i_) throw std::runtime_error("reference: name expected");
    return std::string(s_.substr(b, i_ - b));
  }
  bool defines_next() {  // name ::= ahead
    std::size_t k = i_;
    while (k < s_.size() && word(s_[k])) ++k;
    if (k == i_) return false;
    while (k < s_.size() && std::isspace(static_cast<unsigned char>(s_[k]))) ++k;
    return s_.substr(k, 3) == "::=";
  }
  uint32_t hex(int n) {
    const uint32_t v = static_cast<uint32_t>(
        std::stoul(std::string(s_.substr(i_, static_cast<std::size_t>(n))), nullptr, 16));
    i_ += static_cast<std::size_t>(n);
    return v;
  }
  uint32_t chr() {
    auto c = static_cast<unsigned char>(s_[i_++]);
    if (c == '\\') {
      const char e = s_[i_++];
      switch (e) {
        case 'n':
          return '\n';
        case 't':
          return '\t';
        case 'r':
          return '\r';
        case 'x':
          return hex(2);
        case 'u':
          return hex(4);
        case 'U':
          return hex(8);
        default:
          return static_cast<unsigned char>(e);  // \\ \" \] \[ \- ...
      }
    }
    if (c < 0x80) return c;
    const int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
    uint32_t v = c & (0x3f >> extra);
    for (int k = 0; k < extra; ++k) v = v << 6 | (static_cast<unsigned char>(s_[i_++]) & 0x3f);
    return v;
  }
  int alt() {
    RefNode n;
    n.kind = RefNode::kAlt;
    n.kids.push_back(seq());
    for (space(); i_ < s_.size() && s_[i_] == '|'; space()) {
      ++i_;
      n.kids.push_back(seq());
    }
    return add(std::move(n));
  }
  int seq() {
    RefNode n;
    n.kind = RefNode::kSeq;
    for (;;) {
      space();
      if (i_ >= s_.size() || s_[i_] == '|' || s_[i_] == ')' || defines_next()) break;
      int x = primary();
      for (;;) {
        space();
        if (i_ >= s_.size()) break;
        RefNode r;
        r.kind = RefNode::kRep;
        if (s_[i_] == '*') {
          ++i_;
        } else if (s_[i_] == '+') {
          ++i_, r.min = 1;
        } else if (s_[i_] == '?') {
          ++i_, r.max = 1;
        } else if (s_[i_] == '{') {
          ++i_;
          r.min = r.max = std::stoi(std::string(s_.substr(i_)));
          while (std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
          if (s_[i_] == ',') {
            ++i_;
            r.max = s_[i_] == '}' ? -1 : std::stoi(std::string(s_.substr(i_)));
            while (std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
          }
          ++i_;  // }
        } else {
          break;
        }
        r.kids = {x};
        x = add(std::move(r));
      }
      n.kids.push_back(x);
    }
    return add(std::move(n));
  }
  int primary() {
    RefNode n;
    const char c = s_[i_];
    if (c == '"') {
      ++i_;
      n.kind = RefNode::kLit;
      while (s_[i_] != '"') n.lit.push_back(chr());
      ++i_;
    } else if (c == '[') {
      ++i_;
      n.kind = RefNode::kClass;
      if (s_[i_] == '^') n.negated = true, ++i_;
      while (s_[i_] != ']') {
        const uint32_t lo = chr();
        uint32_t hi = lo;
        if (s_[i_] == '-' && s_[i_ + 1] != ']') {
          ++i_;
          hi = chr();
        }
        n.ranges.push_back({lo, hi});
      }
      ++i_;
    } else if (c == '.') {
      ++i_;
      n.kind = RefNode::kClass;
      n.ranges = {{0, 0x10ffff}};
    } else if (c == '(') {
      ++i_;
      const int a = alt();
      space();
      ++i_;  // )
      return a;
    } else {
      n.kind = RefNode::kRef;
      n.rule = id(ident());
    }
    return add(std::move(n));
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::vector<RefNode> nodes_;
  std::vector<std::string> names_;
  std::vector<int> body_;
  int root_ = 0;
};

// Whether the code points s are a string of g, or a prefix of one.
class RefMatcher {
 public:
  RefMatcher(const RefGrammar& g, std::vector<uint32_t> s)
      : g_(g),
        s_(std::move(s)),
        n_(static_cast<int>(s_.size())),
        memo_(static_cast<std::size_t>(g.n_rules() * (n_ + 1))),
        vmemo_(memo_.size(), -1) {}
  bool member() { return ends(g_.body(g_.root()), 0)[static_cast<std::size_t>(n_)]; }
  bool viable() { return viable(g_.body(g_.root()), 0); }

 private:
  using Set = std::vector<char>;  // end positions 0..n
  Set ends(int node, int i) {
    const RefNode& x = g_.nodes()[static_cast<std::size_t>(node)];
    Set out(static_cast<std::size_t>(n_) + 1, 0);
    switch (x.kind) {
      case RefNode::kLit: {
        const int k = static_cast<int>(x.lit.size());
        if (i + k <= n_ && std::equal(x.lit.begin(), x.lit.end(), s_.begin() + i))
          out[static_cast<std::size_t>(i + k)] = 1;
        break;
      }
      case RefNode::kClass:
        if (i < n_ && x.has(s_[static_cast<std::size_t>(i)]) &&
            !(s_[static_cast<std::size_t>(i)] >= 0xd800 && s_[static_cast<std::size_t>(i)] <= 0xdfff))
          out[static_cast<std::size_t>(i) + 1] = 1;
        break;
      case RefNode::kRef: {
        Set& m = memo_[static_cast<std::size_t>(x.rule * (n_ + 1) + i)];
        if (!m.empty()) return m;
        m = out;  // a rule met again at the same place adds nothing (no left recursion here)
        out = ends(g_.body(x.rule), i);
        memo_[static_cast<std::size_t>(x.rule * (n_ + 1) + i)] = out;
        break;
      }
      case RefNode::kSeq: {
        Set at(out.size(), 0);
        at[static_cast<std::size_t>(i)] = 1;
        for (int kid : x.kids) at = step(kid, at);
        out = at;
        break;
      }
      case RefNode::kAlt:
        for (int kid : x.kids) {
          const Set e = ends(kid, i);
          for (std::size_t p = 0; p < out.size(); ++p) out[p] |= e[p];
        }
        break;
      case RefNode::kRep: {
        Set at(out.size(), 0);
        at[static_cast<std::size_t>(i)] = 1;
        for (int k = 0;; ++k) {
          if (k >= x.min)
            for (std::size_t p = 0; p < out.size(); ++p) out[p] |= at[p];
          if (x.max >= 0 && k == x.max) break;
          Set next = step(x.kids[0], at);
          if (k >= x.min) {  // past the least count: stop once nothing new is reached
            bool grew = false;
            for (std::size_t p = 0; p < out.size(); ++p) grew = grew || (next[p] && !out[p]);
            if (!grew) break;
          }
          if (std::none_of(next.begin(), next.end(), [](char c) { return c; })) break;
          at = std::move(next);
        }
        break;
      }
    }
    return out;
  }
  Set step(int node, const Set& from) {
    Set out(from.size(), 0);
    for (int p = 0; p <= n_; ++p)
      if (from[static_cast<std::size_t>(p)]) {
        const Set e = ends(node, p);
        for (std::size_t q = 0; q < out.size(); ++q) out[q] |= e[q];
      }
    return out;
  }
  // s[i..n) is a prefix of some string node derives (the tests' rules all derive some string).
  bool viable(int node, int i) {
    if (i == n_) return true;
    const RefNode& x = g_.nodes()[static_cast<std::size_t>(node)];
    switch (x.kind) {
      case RefNode::kLit: {
        const auto k = std::min<std::size_t>(x.lit.size(), static_cast<std::size_t>(n_ - i));
        return static_cast<std::size_t>(n_ - i) <= x.lit.size() &&
               std::equal(x.lit.begin(), x.lit.begin() + static_cast<std::ptrdiff_t>(k), s_.begin() + i);
      }
      case RefNode::kClass:
        return n_ - i == 1 && ends(node, i)[static_cast<std::size_t>(n_)];
      case RefNode::kRef: {
        signed char& m = vmemo_[static_cast<std::size_t>(x.rule * (n_ + 1) + i)];
        if (m >= 0) return m;
        m = 0;
        const bool v = viable(g_.body(x.rule), i);
        vmemo_[static_cast<std::size_t>(x.rule * (n_ + 1) + i)] = v;
        return v;
      }
      case RefNode::kSeq: {
        Set at(static_cast<std::size_t>(n_) + 1, 0);
        at[static_cast<std::size_t>(i)] = 1;
        for (int kid : x.kids) {
          for (int p = 0; p <= n_; ++p)
            if (at[static_cast<std::size_t>(p)] && viable(kid, p)) return true;
          at = step(kid, at);
        }
        return at[static_cast<std::size_t>(n_)] != 0;
      }
      case RefNode::kAlt:
        for (int kid : x.kids)
          if (viable(kid, i)) return true;
        return false;
      case RefNode::kRep: {
        if (x.max == 0) return false;
        Set at(static_cast<std::size_t>(n_) + 1, 0), seen = at;
        at[static_cast<std::size_t>(i)] = 1;
        for (int k = 0; x.max < 0 || k < x.max; ++k) {
          for (int p = 0; p <= n_; ++p)
            if (at[static_cast<std::size_t>(p)] && viable(x.kids[0], p)) return true;
          bool grew = false;
          for (std::size_t p = 0; p < at.size(); ++p) grew = grew || (at[p] && !seen[p]), seen[p] |= at[p];
          if (!grew && k > 0) return false;
          at = step(x.kids[0], at);
        }
        return false;
      }
    }
    return false;
  }

  const RefGrammar& g_;
  std::vector<uint32_t> s_;
  int n_;
  std::vector<Set> memo_;           // ends of rule r at i: [r * (n + 1) + i], empty until known
  std::vector<signed char> vmemo_;  // viable likewise, -1 until known
};

inline std::string utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xc0 | c >> 6), s += static_cast<char>(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xe0 | c >> 12), s += static_cast<char>(0x80 | (c >> 6 & 0x3f)),
        s += static_cast<char>(0x80 | (c & 0x3f));
  } else {
    s += static_cast<char>(0xf0 | c >> 18), s += static_cast<char>(0x80 | (c >> 12 & 0x3f));
    s += static_cast<char>(0x80 | (c >> 6 & 0x3f)), s += static_cast<char>(0x80 | (c & 0x3f));
  }
  return s;
}

// Decodes whole characters by trying every encoding length: a character is the one code point
// whose utf8() is the next bytes (so overlong forms, surrogates and stray bytes fail).
// The bytes after the last whole character go to `rest`; false when they begin no character.
inline bool decode(std::string_view b, std::vector<uint32_t>& cps, std::string& rest) {
  std::size_t i = 0;
  while (i < b.size()) {
    const auto c = static_cast<uint8_t>(b[i]);
    const std::size_t len = c < 0x80             ? 1
                            : (c & 0xe0) == 0xc0 ? 2
                            : (c & 0xf0) == 0xe0 ? 3
                            : (c & 0xf8) == 0xf0 ? 4
                                                 : 0;
    if (len == 0) return false;
    if (i + len > b.size()) break;
    uint32_t v = len == 1 ? c : c & (0xff >> (len + 1));
    for (std::size_t k = 1; k < len; ++k) v = v << 6 | (static_cast<uint8_t>(b[i + k]) & 0x3f);
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff) || utf8(v) != b.substr(i, len)) return false;
    cps.push_back(v);
    i += len;
  }
  rest = std::string(b.substr(i));
  return true;
}

// The grammar's verdicts on a byte string: whether it is a string of the grammar, and whether
// some string of the grammar starts with it.
struct RefVerdict {
  bool member = false, viable = false;
};
inline RefVerdict judge(const RefGrammar& g, std::string_view bytes) {
  std::vector<uint32_t> cps;
  std::string rest;
  if (!decode(bytes, cps, rest)) return {};
  if (rest.empty()) {
    RefMatcher m(g, cps);
    return {m.member(), m.viable()};
  }
  // A character begun: try one code point of each stretch the grammar does not tell apart among
  // those whose encoding starts with `rest` (the ends of the stretches are breakpoints).
  std::vector<uint32_t> candidates = g.breakpoints();
  const auto lead = static_cast<uint8_t>(rest[0]);
  const uint32_t lo = (lead & 0xe0) == 0xc0 ? 0x80 : (lead & 0xf0) == 0xe0 ? 0x800 : 0x10000;
  const uint32_t hi = lo == 0x80 ? 0x7ff : lo == 0x800 ? 0xffff : 0x10ffff;
  // The code points of that length whose encoding starts with rest, found by brute force: a run
  // of 64^k aligned on 64, so each block of 64 is tested by its first code point, then scanned.
  static std::map<std::string, std::pair<uint32_t, uint32_t>> runs;  // by rest: the tests repeat them
  uint32_t first = hi + 1, last = 0;
  if (const auto it = runs.find(rest); it != runs.end())
    first = it->second.first, last = it->second.second;
  else
    for (uint32_t c = lo; c <= hi; c += 64)
      if (utf8(c).substr(0, rest.size()) == rest || utf8(std::min(c + 63, hi)).substr(0, rest.size()) == rest)
        for (uint32_t d = c; d <= std::min(c + 63, hi); ++d)
          if (!(d >= 0xd800 && d <= 0xdfff) && utf8(d).substr(0, rest.size()) == rest)
            first = std::min(first, d), last = std::max(last, d);
  runs[rest] = {first, last};
  if (first <= last) candidates.push_back(first), candidates.push_back(last);
  RefVerdict v;
  for (uint32_t c : candidates) {
    if (c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff) || utf8(c).size() <= rest.size() ||
        utf8(c).substr(0, rest.size()) != rest)
      continue;
    std::vector<uint32_t> with = cps;
    with.push_back(c);
    if (RefMatcher(g, with).viable()) {
      v.viable = true;
      break;
    }
  }
  return v;
}

}  // namespace dpa::engine::test
