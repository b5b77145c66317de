// The parser of regex.h's patterns (Python's re syntax) into a tree, and Regex::compile, which
// hands the tree to regex_dfa.cpp for the automata. Anchors are checked here for their placement
// (where they are no-ops under a full match); everything refused is refused here, with its offset,
// except what only the automata can tell (too complex, matches no text).
#include "engine/regex.h"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "engine/compile_cache.h"
#include "engine/regex_internal.h"

namespace dpa::engine {
namespace regex_detail {
namespace {

[[noreturn]] void fail(std::size_t at, const std::string& what) {
  throw Error("at offset " + std::to_string(at) + ": " + what);
}

// Sorted, disjoint and not adjacent.
void normalize(Ranges& r) {
  std::sort(r.begin(), r.end());
  std::size_t k = 0;
  for (const auto& x : r) {
    if (k > 0 && x.first <= r[k - 1].second + 1)
      r[k - 1].second = std::max(r[k - 1].second, x.second);
    else
      r[k++] = x;
  }
  r.resize(k);
}

Ranges complement(Ranges r) {
  normalize(r);
  Ranges out;
  uint32_t lo = 0;
  for (const auto& [a, b] : r) {
    if (a > lo) out.push_back({lo, a - 1});
    lo = b + 1;
  }
  if (lo <= kMaxCode) out.push_back({lo, kMaxCode});
  return out;
}

// Both normalized.
Ranges intersect(const Ranges& a, const Ranges& b) {
  Ranges out;
  for (std::size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    const uint32_t lo = std::max(a[i].first, b[j].first), hi = std::min(a[i].second, b[j].second);
    if (lo <= hi) out.push_back({lo, hi});
    if (a[i].second < b[j].second) ++i;
    else ++j;
  }
  return out;
}

// \d \w \s (ASCII, see regex.h) and their capitals, the complements over all code points.
Ranges shorthand(uint8_t c) {
  Ranges r;
  switch (c | 0x20) {
    case 'd':
      r = {{'0', '9'}};
      break;
    case 'w':
      r = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
      break;
    default:  // s: \t \n \v \f \r and space
      r = {{'\t', '\r'}, {' ', ' '}};
      break;
  }
  return c >= 'a' ? r : complement(r);
}

// Python's IGNORECASE over the ASCII letters: each letter's class of code points that match it
// (checked against CPython 3.11's re, every code point): the two cases, and for i, k and s the
// non-ASCII letters Unicode's simple case mappings join to them.
constexpr uint32_t kNoCode = 0xffffffff;
constexpr std::array<std::array<uint32_t, 4>, 26> kLetterClasses = [] {
  std::array<std::array<uint32_t, 4>, 26> t{};
  for (uint32_t k = 0; k < 26; ++k) t[k] = {'a' + k, 'A' + k, kNoCode, kNoCode};
  t['i' - 'a'][2] = 0x130, t['i' - 'a'][3] = 0x131;  // İ ı
  t['k' - 'a'][2] = 0x212a;                          // Kelvin sign
  t['s' - 'a'][2] = 0x17f;                           // long s
  return t;
}();
bool is_case_extra(uint32_t cp) { return cp == 0x130 || cp == 0x131 || cp == 0x212a || cp == 0x17f; }
bool contains(const Ranges& r, uint32_t cp) {
  for (const auto& [lo, hi] : r)
    if (cp >= lo && cp <= hi) return true;
  return false;
}
// Every letter class that r meets, added whole.
void fold_case(Ranges& r) {
  Ranges add;
  for (const auto& cls : kLetterClasses) {
    bool meets = false;
    for (uint32_t cp : cls) meets = meets || (cp != kNoCode && contains(r, cp));
    if (meets)
      for (uint32_t cp : cls)
        if (cp != kNoCode) add.push_back({cp, cp});
  }
  r.insert(r.end(), add.begin(), add.end());
}

// The UTF-8 sequence at s[i] (RFC 3629): its length, 0 when it is not valid; cp its code point.
int decode(std::string_view s, std::size_t i, uint32_t& cp) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  int n = 0;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c < 0x80) return cp = c, 1;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, cp = c & 0x0f, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, cp = c & 0x07, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  else
    return 0;
  if (i + n > s.size()) return 0;
  for (int k = 1; k < n; ++k, lo = 0x80, hi = 0xbf) {
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if (b < lo || b > hi) return 0;
    cp = cp << 6 | (b & 0x3f);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// The parser: Python's re syntax (regex.h) into a tree.

bool is_oct(char c) {
  return c >= '0' && c <= '7';
}
bool is_ascii_alnum(uint8_t c) {
  return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}
  std::vector<Node> nodes;
  std::vector<Ranges> sets;  // each distinct class once

  int32_t parse() {
    for (std::size_t i = 0; i < p_.size();) {
      uint32_t cp;
      const int n = decode(p_, i, cp);
      if (n == 0) fail(i, "the pattern is not valid UTF-8");
      i += static_cast<std::size_t>(n);
    }
    const int32_t root = alternation(0);
    if (i_ < p_.size()) fail(i_, "unbalanced parenthesis");  // only a ')' stops the top level
    check_anchors(root, false, false);
    return root;
  }

 private:
  int32_t add(Node::Kind kind, std::size_t at) {
    nodes.push_back(Node{kind, at, -1, 0, 0, {}});
    return static_cast<int32_t>(nodes.size() - 1);
  }
  int32_t add_set(Ranges r, std::size_t at) {  // equal sets share one entry (and one recipe)
    normalize(r);
    const auto [it, fresh] = set_ids_.try_emplace(r, static_cast<int32_t>(sets.size()));
    if (fresh) sets.push_back(std::move(r));
    const int32_t n = add(Node::kSet, at);
    nodes[n].set = it->second;
    return n;
  }
  int32_t add_list(Node::Kind kind, std::size_t at, std::vector<int32_t> kids) {
    if (kids.size() == 1) return kids[0];
    const int32_t n = add(kids.empty() ? Node::kEmpty : kind, at);
    nodes[n].kids = std::move(kids);
    return n;
  }
  bool at(char c) const { return i_ < p_.size() && p_[i_] == c; }
  bool is_anchor(int32_t n) const { return nodes[n].kind == Node::kBegin || nodes[n].kind == Node::kEnd; }

  int32_t alternation(int depth) {
    const std::size_t start = i_;
    std::vector<int32_t> alts{sequence(depth)};
    while (at('|')) {
      ++i_;
      alts.push_back(sequence(depth));
    }
    return add_list(Node::kAlt, start, std::move(alts));
  }

  // Items up to '|', ')' or the end; a quantifier applies to the item before it (comments aside).
  int32_t sequence(int depth) {
    const std::size_t start = i_;
    std::vector<int32_t> items;
    bool last_repeat = false;
    while (i_ < p_.size() && p_[i_] != '|' && p_[i_] != ')') {
      const std::size_t q = i_;
      int64_t lo = 0, hi = 0;
      if (!quantifier(lo, hi)) {
        const int32_t a = atom(depth);
        if (a >= 0) items.push_back(a), last_repeat = false;
        continue;
      }
      if (items.empty() || is_anchor(items.back())) fail(q, "nothing to repeat");
      if (last_repeat) fail(q, "multiple repeat");
      if (at('+')) fail(q, "possessive quantifiers (*+, ++, ?+, {m,n}+) are not supported");
      if (at('?')) ++i_;  // lazy: the same set of full matches
      const int32_t r = add(Node::kRepeat, q);
      nodes[r].min = lo, nodes[r].max = hi, nodes[r].kids = {items.back()};
      items.back() = r;
      last_repeat = true;
    }
    return add_list(Node::kConcat, start, std::move(items));
  }

  // * + ? or a valid {n}, {n,}, {,m}, {n,m}, {,}; anything else (a `{` included) is not one.
  bool quantifier(int64_t& lo, int64_t& hi) {
    if (i_ >= p_.size()) return false;
    const char c = p_[i_];
    if (c == '*' || c == '+' || c == '?') {
      lo = c == '+' ? 1 : 0, hi = c == '?' ? 1 : -1;
      ++i_;
      return true;
    }
    if (c != '{') return false;
    std::size_t j = i_ + 1;
    auto number = [&](int64_t& v) {
      const std::size_t from = j;
      for (v = 0; j < p_.size() && p_[j] >= '0' && p_[j] <= '9'; ++j)
        v = std::min<int64_t>(v * 10 + (p_[j] - '0'), 1 << 30);
      return j > from;
    };
    const bool has_lo = number(lo);
    const bool comma = j < p_.size() && p_[j] == ',';
    bool has_hi = false;
    if (comma) ++j, has_hi = number(hi);
    if (j >= p_.size() || p_[j] != '}' || (!has_lo && !comma)) return false;
    if (!has_lo) lo = 0;
    if (!comma)
      hi = lo;
    else if (!has_hi)
      hi = -1;
    const std::string text(p_.substr(i_, j + 1 - i_));
    if (lo > Regex::kMaxRepeat || hi > Regex::kMaxRepeat)
      fail(i_, "repeat counts are limited to " + std::to_string(Regex::kMaxRepeat) + " (" + text + ")");
    if (hi >= 0 && lo > hi) fail(i_, "bad repeat " + text + ": the minimum is greater than the maximum");
    i_ = j + 1;
    return true;
  }

  // One item; -1 for a comment.
  int32_t atom(int depth) {
    const std::size_t a = i_;
    switch (p_[i_]) {
      case '(':
        return group(depth);
      case '[':
        return char_class();
      case '\\':
        return escape();
      case '.':
        ++i_;
        return add_set(dotall_ ? complement({}) : complement({{'\n', '\n'}}), a);
      case '^':
        ++i_;
        return add(Node::kBegin, a);
      case '$':
        ++i_;
        return add(Node::kEnd, a);
      default: {
        uint32_t cp;
        i_ += static_cast<std::size_t>(decode(p_, i_, cp));
        return add_set(cased({{cp, cp}}, cp, a), a);
      }
    }
  }

  int32_t group(int depth) {
    const std::size_t open = i_++;
    if (depth >= Regex::kMaxDepth)
      fail(open, "groups nested more than " + std::to_string(Regex::kMaxDepth) + " deep");
    if (at('?')) {
      ++i_;
      const char c = i_ < p_.size() ? p_[i_] : '\0';
      const char d = i_ + 1 < p_.size() ? p_[i_ + 1] : '\0';
      if (c == ':') {
        ++i_;
      } else if ((c == 'P' && d == '<') || (c == '<' && d != '=' && d != '!')) {
        i_ += c == 'P' ? 2 : 1;
        group_name(open);
      } else if (c == 'P' && d == '=') {
        fail(open, "backreferences ((?P=name)) are not supported");
      } else if (c == '<') {
        fail(open, "lookbehind assertions ((?<=...), (?<!...)) are not supported");
      } else if (c == '=' || c == '!') {
        fail(open, "lookahead assertions ((?=...), (?!...)) are not supported");
      } else if (c == '>') {
        fail(open, "atomic groups ((?>...)) are not supported");
      } else if (c == '(') {
        fail(open, "conditional groups ((?(...)...)) are not supported");
      } else if (c == '#') {
        const std::size_t close = p_.find(')', i_);
        if (close == std::string_view::npos) fail(open, "missing ), unterminated comment");
        i_ = close + 1;
        return -1;
      } else if (c != '\0' && std::string_view("aiLmsux-").find(c) != std::string_view::npos) {
        const bool icase = icase_, dotall = dotall_;
        if (!flags(open)) return -1;  // global flags: no item
        const int32_t inner = scoped(open, depth);
        icase_ = icase, dotall_ = dotall;  // as before the group
        return inner;
      } else {
        fail(open, i_ < p_.size() ? "unknown extension (?" + std::string(1, c)
                                  : "unexpected end of pattern after (?");
      }
    }
    return scoped(open, depth);
  }

  // A group's body up to its ')', under the flags now set (a flag group restores them after it;
  // nothing inside a group can set flags for what follows: global ones stand only at the start).
  int32_t scoped(std::size_t open, int depth) {
    int32_t inner = alternation(depth + 1);
    if (!at(')')) fail(open, "missing ), unterminated subpattern");
    ++i_;
    // A group is an item of its own: (^)* repeats nothing harmful, where ^* has nothing to repeat.
    if (is_anchor(inner)) {
      const int32_t g = add(Node::kConcat, open);
      nodes[g].kids = {inner};
      inner = g;
    }
    return inner;
  }

  // Inline flags after "(?" (Python's): "(?ims)" at the start of the pattern, for all of it
  // (returns false), or "(?ims-is:" for the group (returns true; group() restores them). i: ASCII
  // letters match either case (fold_case); s: '.' takes '\n' too; a, u, m change nothing here
  // (\d \w \s are ASCII, anchors stand only at the ends); x and L are refused.
  bool flags(std::size_t open) {
    bool on_i = false, on_s = false, off_i = false, off_s = false, minus = false;
    for (; i_ < p_.size() && p_[i_] != ':' && p_[i_] != ')'; ++i_) {
      const char f = p_[i_];
      if (f == '-') {
        if (minus) fail(open, "bad inline flags: a second '-'");
        minus = true;
      } else if (f == 'x') {
        fail(open, "the verbose flag (?x) is not supported");
      } else if (f == 'L') {
        fail(open, "the locale flag (?L) is not supported (Python refuses it for text patterns too)");
      } else if (f == 'i' || f == 's') {
        (f == 'i' ? (minus ? off_i : on_i) : (minus ? off_s : on_s)) = true;
      } else if (f == 'a' || f == 'u') {
        if (minus) fail(open, std::string("bad inline flags: cannot turn off flag '") + f + "'");
      } else if (f != 'm') {
        fail(open, "unknown flag '" + std::string(1, f) + "'");
      }
    }
    if (i_ >= p_.size()) fail(open, "missing -, : or )");
    const bool global = p_[i_] == ')';
    ++i_;
    if (global) {
      if (minus) fail(open, "missing : after the flags to turn off");
      if (open != flags_end_) fail(open, "global flags not at the start of the expression");
      flags_end_ = i_;
    } else if ((on_i && off_i) || (on_s && off_s)) {
      fail(open, "bad inline flags: a flag turned on and off");
    }
    icase_ = (icase_ || on_i) && !off_i, dotall_ = (dotall_ || on_s) && !off_s;
    return !global;
  }

  void group_name(std::size_t open) {
    const std::size_t from = i_, close = p_.find('>', i_);
    if (close == std::string_view::npos) fail(open, "missing >, unterminated group name");
    const std::string name(p_.substr(from, close - from));
    if (name.empty()) fail(from, "missing group name");
    bool ok = !(name[0] >= '0' && name[0] <= '9');
    for (const char c : name)
      ok = ok && (is_ascii_alnum(static_cast<uint8_t>(c)) || c == '_' || static_cast<uint8_t>(c) >= 0x80);
    if (!ok) fail(from, "bad character in group name '" + name + "'");
    if (!names_.insert(name).second) fail(from, "redefinition of group name '" + name + "'");
    i_ = close + 1;
  }

  // An escape outside a class: a class, an anchor, or one code point.
  int32_t escape() {
    const std::size_t a = i_++;
    if (i_ >= p_.size()) fail(a, "bad escape (end of pattern)");
    const uint8_t c = static_cast<uint8_t>(p_[i_]);
    if (std::string_view("dDwWsS").find(static_cast<char>(c)) != std::string_view::npos)
      return ++i_, add_set(shorthand_flagged(c), a);
    if (c == 'A') return ++i_, add(Node::kBegin, a);
    if (c == 'Z' || c == 'z') return ++i_, add(Node::kEnd, a);
    if (c == 'b' || c == 'B') fail(a, "word boundaries (\\b, \\B) are not supported");
    if (c == 'g') fail(a, "backreferences (\\g<...>) are not supported");
    if (c >= '1' && c <= '9') {
      // Python: three octal digits are an octal escape, other digits a group reference.
      const bool octal =
          is_oct(static_cast<char>(c)) && i_ + 2 < p_.size() && is_oct(p_[i_ + 1]) && is_oct(p_[i_ + 2]);
      if (!octal) {
        std::size_t j = i_ + 1;
        if (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') ++j;
        fail(a, "backreferences (\\" + std::string(p_.substr(i_, j - i_)) + ") are not supported");
      }
    }
    const uint32_t cp = code_escape(a);
    return add_set(cased({{cp, cp}}, cp, a), a);
  }

  // Under (?i), a non-ASCII code point written in the pattern, other than the letter classes' own,
  // is refused (its case partners are not known here).
  void foldable(uint32_t cp, std::size_t a) const {
    if (icase_ && cp >= 0x80 && !is_case_extra(cp))
      fail(a, "case-insensitive matching ((?i)) covers ASCII letters only; U+" + hex_code(cp) +
                  " would need Unicode's case tables");
  }
  // A literal's set under the flags: folded under (?i).
  Ranges cased(Ranges r, uint32_t cp, std::size_t a) const {
    foldable(cp, a);
    if (icase_) fold_case(r);
    return r;
  }
  static std::string hex_code(uint32_t cp) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%04X", cp);
    return buf;
  }
  // \d \w \s and their negations under (?i): the positive class folded, then negated.
  Ranges shorthand_flagged(uint8_t c) const {
    if (!icase_) return shorthand(c);
    const auto lower = static_cast<uint8_t>(c | 0x20);
    Ranges pos = shorthand(lower);
    fold_case(pos);
    return c == lower ? pos : complement(std::move(pos));
  }

  // An escape of one code point at p_[i_] (after the backslash at `a`), in a class or not.
  uint32_t code_escape(std::size_t a) {
    const uint8_t c = static_cast<uint8_t>(p_[i_++]);
    switch (c) {
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
      case 'x':
        return hex(a, 2);
      case 'u':
        return hex(a, 4);
      case 'U':
        return hex(a, 8);
      case 'N':
        fail(a, "named Unicode escapes (\\N{...}) are not supported");
      default:
        break;
    }
    if (is_oct(static_cast<char>(c))) {
      // Octal: \0 and up to two more digits; outside a class escape() lets other digits through
      // only as three octal ones, in a class up to three are read (Python's rules).
      uint32_t v = c - '0';
      for (int k = 0; k < 2 && i_ < p_.size() && is_oct(p_[i_]); ++k)
        v = v * 8 + static_cast<uint32_t>(p_[i_++] - '0');
      if (v > 0377)
        fail(a, "octal escape value \\" + std::string(p_.substr(a + 1, i_ - a - 1)) +
                    " outside of range 0-0o377");
      return v;
    }
    if (c < 0x80 && is_ascii_alnum(c)) fail(a, "bad escape \\" + std::string(1, static_cast<char>(c)));
    uint32_t cp;  // escaped punctuation or any other code point: itself
    i_ += static_cast<std::size_t>(decode(p_, i_ - 1, cp)) - 1;
    return cp;
  }

  uint32_t hex(std::size_t a, int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k, ++i_) {
      const int h = i_ < p_.size() ? hex_value(static_cast<uint8_t>(p_[i_])) : -1;
      if (h < 0) fail(a, "incomplete escape " + std::string(p_.substr(a, i_ - a)));
      v = v << 4 | static_cast<uint32_t>(h);
    }
    const std::string text(p_.substr(a, i_ - a));
    if (v > kMaxCode) fail(a, "bad escape " + text + ": past U+10FFFF");
    if (v >= 0xd800 && v <= 0xdfff)
      fail(a, "bad escape " + text + ": a surrogate, which UTF-8 text cannot hold");
    return v;
  }

  // [...] with Python's rules: `]` first is literal, so is `-` first or last; \d and the like
  // are members but cannot end a range.
  int32_t char_class() {
    const std::size_t open = i_++;
    const bool negate = at('^');
    if (negate) ++i_;
    const std::size_t first = i_;
    Ranges r, sh;  // the members written out; the \d-like ones (already under the flags)
    for (;;) {
      if (i_ >= p_.size()) fail(open, "unterminated character set");
      const std::size_t item = i_;
      if (p_[i_] == ']' && i_ != first) {
        ++i_;
        break;
      }
      uint32_t lo = 0, hi = 0;
      const bool set_lo = class_atom(lo, r, sh);
      if (!at('-')) continue;
      ++i_;
      if (i_ >= p_.size()) fail(open, "unterminated character set");
      if (p_[i_] == ']') {  // "x-]": a literal '-'
        r.push_back({'-', '-'});
        ++i_;
        break;
      }
      const bool set_hi = class_atom(hi, r, sh);
      const std::string text(p_.substr(item, i_ - item));
      if (set_lo || set_hi)
        fail(item, "bad character range " + text + ": a class such as \\d cannot be a range's end");
      if (hi < lo) fail(item, "bad character range " + text);
      r.pop_back(), r.pop_back();  // the two ends, pushed as members by class_atom
      r.push_back({lo, hi});
    }
    if (icase_) fold_case(r);
    r.insert(r.end(), sh.begin(), sh.end());
    return add_set(negate ? complement(std::move(r)) : std::move(r), open);
  }

  // One member of a class: a code point appended to r (cp), or \d and the like to sh (true).
  bool class_atom(uint32_t& cp, Ranges& r, Ranges& sh) {
    const std::size_t a = i_;
    if (p_[i_] != '\\') {
      i_ += static_cast<std::size_t>(decode(p_, i_, cp));
      foldable(cp, a);  // the class is folded whole below
      r.push_back({cp, cp});
      return false;
    }
    if (++i_ >= p_.size()) fail(a, "bad escape (end of pattern)");
    const uint8_t c = static_cast<uint8_t>(p_[i_]);
    if (std::string_view("dDwWsS").find(static_cast<char>(c)) != std::string_view::npos) {
      ++i_;
      for (const auto& x : shorthand_flagged(c)) sh.push_back(x);
      return true;
    }
    if (c == 'b')
      cp = '\b', ++i_;  // backspace, in a class
    else
      cp = code_escape(a);
    foldable(cp, a);
    r.push_back({cp, cp});
    return false;
  }

  // ^ \A must have nothing before them, $ \Z \z nothing after: then they are no-ops under a full
  // match. `before` / `after`: whether some text can come before / after node n.
  void check_anchors(int32_t n, bool before, bool after) {
    const Node& x = nodes[n];
    auto what = [&] { return std::string(p_.substr(x.offset, p_[x.offset] == '\\' ? 2 : 1)); };
    switch (x.kind) {
      case Node::kBegin:
        if (before)
          fail(x.offset,
               what() + " is supported only where nothing can come before it (the whole output is matched)");
        return;
      case Node::kEnd:
        if (after)
          fail(x.offset,
               what() + " is supported only where nothing can come after it (the whole output is matched)");
        return;
      case Node::kConcat: {
        std::vector<char> later(x.kids.size() + 1, 0);
        for (std::size_t i = x.kids.size(); i-- > 0;) later[i] = later[i + 1] || !zero_width(x.kids[i]);
        bool earlier = false;
        for (std::size_t i = 0; i < x.kids.size(); ++i) {
          check_anchors(x.kids[i], before || earlier, after || later[i + 1]);
          earlier = earlier || !zero_width(x.kids[i]);
        }
        return;
      }
      case Node::kAlt:
        for (const int32_t k : x.kids) check_anchors(k, before, after);
        return;
      case Node::kRepeat: {  // a second round comes after the first
        const bool again = (x.max < 0 || x.max > 1) && !zero_width(x.kids[0]);
        check_anchors(x.kids[0], before || again, after || again);
        return;
      }
      default:
        return;
    }
  }

  // Matches only the empty text, by its form (anchors and empty groups).
  bool zero_width(int32_t n) {
    if (zero_.size() < nodes.size()) zero_.resize(nodes.size(), -1);
    if (zero_[n] >= 0) return zero_[n];
    const Node& x = nodes[n];
    bool z = x.kind != Node::kSet;
    for (const int32_t k : x.kids) z = z && zero_width(k);
    zero_[n] = z;
    return z;
  }

  std::string_view p_;
  std::size_t i_ = 0;
  std::set<std::string> names_;
  bool icase_ = false, dotall_ = false;  // (?i), (?s) where the parser is
  std::size_t flags_end_ = 0;            // where the leading global flag groups end
  std::map<Ranges, int32_t> set_ids_;
  std::vector<int8_t> zero_;
};

}  // namespace

void escape_for_json(Tree& t) {
  // The bytes a canonical writer spells a character JSON must escape with: Boost.JSON's, as
  // JsonSchema reads keys and enum values (\" \\ \b \f \n \r \t, \u00xx in lower case).
  auto spelling = [](uint32_t c) {
    const char ch = static_cast<char>(c);
    const std::string quoted = boost::json::serialize(boost::json::string_view(&ch, 1));
    return quoted.substr(1, quoted.size() - 2);
  };
  std::map<Ranges, int32_t> ids;
  for (std::size_t i = 0; i < t.sets.size(); ++i) ids.emplace(t.sets[i], static_cast<int32_t>(i));
  auto set_node = [&](Ranges r, std::size_t at) {
    const auto [it, fresh] = ids.try_emplace(r, static_cast<int32_t>(t.sets.size()));
    if (fresh) t.sets.push_back(std::move(r));
    t.nodes.push_back(Node{Node::kSet, at, it->second, 0, 0, {}});
    return static_cast<int32_t>(t.nodes.size() - 1);
  };
  const std::size_t n_nodes = t.nodes.size();  // the ones added below need no rewriting
  for (std::size_t n = 0; n < n_nodes; ++n) {
    if (t.nodes[n].kind != Node::kSet) continue;
    const Ranges set = t.sets[static_cast<std::size_t>(t.nodes[n].set)];
    const std::size_t at = t.nodes[n].offset;
    static const Ranges kMustEscape = {{0, 0x1f}, {'"', '"'}, {'\\', '\\'}};
    static const Ranges kRaw = complement(kMustEscape);
    const Ranges plain = intersect(set, kRaw);
    std::vector<uint32_t> escaped;
    for (const auto& [lo, hi] : intersect(set, kMustEscape))
      for (uint32_t c = lo; c <= hi; ++c) escaped.push_back(c);
    if (escaped.empty()) continue;
    std::vector<int32_t> alts;
    if (!plain.empty()) alts.push_back(set_node(plain, at));
    for (const uint32_t c : escaped) {
      std::vector<int32_t> bytes;
      for (const char b : spelling(c)) bytes.push_back(set_node({{static_cast<uint8_t>(b), static_cast<uint8_t>(b)}}, at));
      t.nodes.push_back(Node{Node::kConcat, at, -1, 0, 0, std::move(bytes)});
      alts.push_back(static_cast<int32_t>(t.nodes.size() - 1));
    }
    Node& x = t.nodes[n];
    x.set = -1;
    if (alts.size() == 1) {  // only one escaped character: its spelling in place
      x = t.nodes[static_cast<std::size_t>(alts[0])];
    } else {
      x.kind = Node::kAlt;
      x.kids = std::move(alts);
    }
  }
}

Tree parse(std::string_view pattern) {
  Parser p(pattern);
  const int32_t root = p.parse();
  return Tree{std::move(p.nodes), std::move(p.sets), root};
}

}  // namespace regex_detail

std::shared_ptr<const Regex> Regex::compile(std::string_view pattern, Target target) {
  if (pattern.size() > kMaxPattern)
    throw Error("the pattern is longer than " + std::to_string(kMaxPattern) + " bytes");
  regex_detail::Tree tree = regex_detail::parse(pattern);
  if (target == Target::json_string) regex_detail::escape_for_json(tree);
  return adopt(regex_detail::build(tree));
}

std::shared_ptr<const Regex> Regex::intersect(const Regex& a, const Regex& b) {
  // Joint byte classes: the pairs of the two DFAs' classes that occur, each with a byte of it.
  std::array<uint8_t, 256> class_of{};
  std::vector<uint8_t> rep;
  std::vector<int16_t> joint(a.n_classes_ * b.n_classes_, -1);
  for (int c = 0; c < 256; ++c) {
    int16_t& j = joint[a.class_of_[c] * b.n_classes_ + b.class_of_[c]];
    if (j < 0) j = static_cast<int16_t>(rep.size()), rep.push_back(static_cast<uint8_t>(c));
    class_of[c] = static_cast<uint8_t>(j);
  }
  const std::size_t nc = rep.size();
  // The pairs reached from (start, start), breadth first; pair i is state i.
  std::vector<std::pair<int32_t, int32_t>> pairs{{a.start(), b.start()}};
  std::unordered_map<uint64_t, int32_t> id{{0, 0}};
  std::vector<int32_t> table;
  std::vector<uint8_t> accepting;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    if (static_cast<int64_t>((i + 1) * nc) > kMaxTable)
      throw Error("too complex: more than " + std::to_string(kMaxTable / static_cast<int64_t>(nc)) +
                  " automaton states of " + std::to_string(nc) + " byte classes");
    const auto [sa, sb] = pairs[i];
    accepting.push_back(a.accepting(sa) && b.accepting(sb));
    for (std::size_t c = 0; c < nc; ++c) {
      const int32_t ta = a.next(sa, rep[c]), tb = ta < 0 ? -1 : b.next(sb, rep[c]);
      if (tb < 0) {
        table.push_back(-1);
        continue;
      }
      const uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(ta)) << 32 | static_cast<uint32_t>(tb);
      auto [it, fresh] = id.try_emplace(key, static_cast<int32_t>(pairs.size()));
      if (fresh) {
        if (static_cast<int64_t>(pairs.size()) + 1 > kMaxStates)
          throw Error("too complex: more than " + std::to_string(kMaxStates) + " automaton states");
        pairs.emplace_back(ta, tb);
      }
      table.push_back(it->second);
    }
  }
  regex_detail::Tables t = regex_detail::prune(nc, class_of, table, accepting);
  if (t.accepting.empty()) return nullptr;
  return adopt(std::move(t));
}

std::shared_ptr<const Regex> Regex::adopt(regex_detail::Tables&& t) {
  std::shared_ptr<Regex> re(new Regex());
  re->n_classes_ = t.n_classes;
  re->class_of_ = t.class_of;
  re->table_ = std::move(t.table);
  re->accepting_ = std::move(t.accepting);
  return re;
}

std::size_t Regex::bytes() const {
  return sizeof(Regex) + table_.capacity() * sizeof(int32_t) + accepting_.capacity();
}

std::shared_ptr<const Regex> Regex::compile_cached(std::string_view pattern, Target target) {
  // At most 64 MiB of DFAs (a capped one holds 8 MB at most) and 1,024 patterns.
  static CompileCache<Regex> cache(1024, 64u << 20);
  if (pattern.size() > kMaxPattern) return compile(pattern, target);  // refused at once; not kept
  std::string key(1, static_cast<char>(target));
  key.append(pattern);
  return cache.get(key, [&] { return compile(pattern, target); }, [](const Regex& re) { return re.bytes(); });
}

}  // namespace dpa::engine
