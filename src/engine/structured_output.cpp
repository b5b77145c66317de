// The recognizers and the token trie of structured_output.h.
#include "engine/structured_output.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include "engine/json_schema.h"
#include "engine/recognizer_util.h"
#include "engine/regex.h"

namespace dpa::engine {
namespace {


}  // namespace

bool JsonPrefix::open(char kind) {
  if (stack_.size() >= kMaxDepth) return false;
  stack_.push_back(kind);
  st_ = kind == '{' ? St::obj_first : St::arr_first;
  return true;
}

void JsonPrefix::value_done() { st_ = stack_.empty() ? St::done : St::after_value; }

bool JsonPrefix::value_start(uint8_t c) {
  switch (c) {
    case '"': st_ = St::string, key_ = false; return true;
    case '{': return open('{');
    case '[': return open('[');
    case '-': st_ = St::num_minus; return true;
    case '0': st_ = St::num_zero; return true;
    case 't': st_ = St::literal, lit_ = 0, lit_at_ = 1; return true;
    case 'f': st_ = St::literal, lit_ = 1, lit_at_ = 1; return true;
    case 'n': st_ = St::literal, lit_ = 2, lit_at_ = 1; return true;
    default:
      if (c >= '1' && c <= '9') {
        st_ = St::num_int;
        return true;
      }
      return false;
  }
}

bool JsonPrefix::string_byte(uint8_t c) {
  if (utf8_left_) {  // a continuation byte in the range the lead byte allows
    if (c < utf8_lo_ || c > utf8_hi_) return false;
    --utf8_left_, utf8_lo_ = 0x80, utf8_hi_ = 0xbf;
    return true;
  }
  if (low_needed_) {  // after a high surrogate escape only its low half's escape may come
    if (c != '\\') return false;
    st_ = St::escape;
    return true;
  }
  if (c == '"') {
    if (key_) st_ = St::colon;
    else value_done();
    return true;
  }
  if (c == '\\') {
    st_ = St::escape;
    return true;
  }
  if (c < 0x20) return false;  // control characters must be escaped
  if (c < 0x80) return true;
  // UTF-8 lead bytes (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
  if (c >= 0xc2 && c <= 0xdf) utf8_left_ = 1;
  else if (c == 0xe0) utf8_left_ = 2, utf8_lo_ = 0xa0;
  else if (c == 0xed) utf8_left_ = 2, utf8_hi_ = 0x9f;
  else if (c >= 0xe1 && c <= 0xef) utf8_left_ = 2;
  else if (c == 0xf0) utf8_left_ = 3, utf8_lo_ = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) utf8_left_ = 3;
  else if (c == 0xf4) utf8_left_ = 3, utf8_hi_ = 0x8f;
  else return false;
  return true;
}

bool JsonPrefix::take_ws() {
  if (ws_run_ >= kMaxWhitespace) return false;
  ++ws_run_;
  took_ws_ = true;
  return true;
}

bool JsonPrefix::feed(uint8_t c) {
  took_ws_ = false;
  if (!step(c)) return false;
  if (!took_ws_) ws_run_ = 0;  // any other byte ends a run of whitespace
  return true;
}

bool JsonPrefix::step(uint8_t c) {
  switch (st_) {
    case St::start:
      if (is_ws(c)) return take_ws();
      return c == '{' && open('{');
    case St::obj_first:
    case St::obj_key:
      if (is_ws(c)) return take_ws();
      if (c == '"') {
        st_ = St::string, key_ = true;
        return true;
      }
      if (c == '}' && st_ == St::obj_first) break;  // closes below
      return false;
    case St::colon:
      if (is_ws(c)) return take_ws();
      if (c != ':') return false;
      st_ = St::value;
      return true;
    case St::value:
      if (is_ws(c)) return take_ws();
      return value_start(c);
    case St::arr_first:
      if (is_ws(c)) return take_ws();
      if (c == ']') break;
      return value_start(c);
    case St::after_value:
      if (is_ws(c)) return take_ws();
      if (c == ',') {
        st_ = stack_.back() == '{' ? St::obj_key : St::value;
        return true;
      }
      if ((c == '}' && stack_.back() == '{') || (c == ']' && stack_.back() == '[')) break;
      return false;
    case St::string:
      return string_byte(c);
    case St::escape:
      if (low_needed_) {
        if (c != 'u') return false;
      } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        st_ = St::string;
        return true;
      } else if (c != 'u') {
        return false;
      }
      st_ = St::unicode, hex_left_ = 4, hex_value_ = 0;
      return true;
    case St::unicode: {
      const int h = hex_value(c);
      if (h < 0) return false;
      // The first two digits decide a surrogate: D800-DBFF high (a low one must follow), DC00-DFFF
      // low (only right after a high one).
      if (hex_left_ == 4 && low_needed_ && h != 0xd) return false;
      if (hex_left_ == 3) {
        const bool low = hex_value_ == 0xd && h >= 0xc;
        if (low != low_needed_) return false;  // a low half missing, or one with no high half before it
      }
      hex_value_ = static_cast<uint16_t>(hex_value_ * 16 + h);
      if (--hex_left_ == 0) {
        const bool high = hex_value_ >= 0xd800 && hex_value_ <= 0xdbff;
        low_needed_ = high;
        st_ = St::string;
      }
      return true;
    }
    case St::num_minus:
      if (c == '0') st_ = St::num_zero;
      else if (c >= '1' && c <= '9') st_ = St::num_int;
      else return false;
      return true;
    case St::num_dot:
      if (!is_digit(c)) return false;
      st_ = St::num_frac;
      return true;
    case St::num_e:
      if (c == '+' || c == '-') st_ = St::num_esign;
      else if (is_digit(c)) st_ = St::num_exp;
      else return false;
      return true;
    case St::num_esign:
      if (!is_digit(c)) return false;
      st_ = St::num_exp;
      return true;
    case St::num_zero:
    case St::num_int:
    case St::num_frac:
    case St::num_exp: {
      if (is_digit(c) && st_ != St::num_zero) return true;
      if (c == '.' && (st_ == St::num_zero || st_ == St::num_int)) {
        st_ = St::num_dot;
        return true;
      }
      if ((c == 'e' || c == 'E') && st_ != St::num_exp) {
        st_ = St::num_e;
        return true;
      }
      // The number ends here (numbers sit inside containers): the byte is the container's.
      const St before = st_;
      st_ = St::after_value;
      if (step(c)) return true;
      st_ = before;
      return false;
    }
    case St::literal: {
      const char* lit = kLiterals[lit_];
      if (c != static_cast<uint8_t>(lit[lit_at_])) return false;
      if (lit[++lit_at_] == '\0') value_done();
      return true;
    }
    case St::done:
      return false;
  }
  // A closer matching the innermost container.
  stack_.pop_back();
  value_done();
  return true;
}

bool JsonPrefix::feed(std::string_view bytes) { return feed_all(*this, bytes); }

void TokenTrie::Trie::insert(const std::string& b, int32_t id) {
  int32_t at = 0;
  for (char ch : b) {
    const auto c = static_cast<uint8_t>(ch);
    int32_t child = nodes[static_cast<std::size_t>(at)].first_child;
    while (child >= 0 && nodes[static_cast<std::size_t>(child)].byte != c)
      child = nodes[static_cast<std::size_t>(child)].next_sibling;
    if (child < 0) {
      Node n;
      n.byte = c;
      n.next_sibling = nodes[static_cast<std::size_t>(at)].first_child;
      child = static_cast<int32_t>(nodes.size());
      nodes.push_back(n);
      nodes[static_cast<std::size_t>(at)].first_child = child;
    }
    at = child;
  }
  Node& end = nodes[static_cast<std::size_t>(at)];
  if (end.token < 0) {
    end.token = id;
  } else {
    same_bytes.push_back(id);
    same_bytes.push_back(end.token);
  }
}

bool ChoicePrefix::feed(uint8_t c) {
  // [lo_, hi_) is sorted and shares depth_ bytes, so the ones whose next byte is c are a run.
  const auto& v = *c_;
  auto next = [&](std::size_t i) { return v[i].size() > depth_ ? static_cast<int>(static_cast<uint8_t>(v[i][depth_])) : -1; };
  std::size_t lo = lo_, hi = hi_;
  while (lo < hi && next(lo) < c) ++lo;  // lists are short: a scan
  std::size_t end = lo;
  while (end < hi && next(end) == c) ++end;
  if (end == lo) return false;
  lo_ = lo, hi_ = end, ++depth_;
  return true;
}

bool ChoicePrefix::feed(std::string_view bytes) { return feed_all(*this, bytes); }

template <typename State>
void TokenTrie::Trie::walk(int32_t node, const State& state, std::vector<uint32_t>& allowed) const {
  for (int32_t c = nodes[static_cast<std::size_t>(node)].first_child; c >= 0;
       c = nodes[static_cast<std::size_t>(c)].next_sibling) {
    State next = state;
    const Node& n = nodes[static_cast<std::size_t>(c)];
    if (!next.feed(n.byte)) continue;  // and every token under it
    if (n.token >= 0) allowed[static_cast<std::size_t>(n.token) >> 5] |= 1u << (n.token & 31);
    walk(c, next, allowed);
  }
}

TokenTrie::TokenTrie(const std::vector<std::string>& token_bytes)
    : id_([] {
        static std::atomic<uint64_t> next{1};
        return next++;
      }()),
      vocab_(static_cast<int64_t>(token_bytes.size())), bytes_(token_bytes), plain_(static_cast<std::size_t>(mask_words()), 0) {
  JsonPrefix in_string;
  in_string.feed(std::string_view("{\"\":\""));
  up_to_.assign(kShortChars + 1, std::vector<uint32_t>(plain_.size(), 0));
  for (std::size_t id = 0; id < token_bytes.size(); ++id) {
    const std::string& b = token_bytes[id];
    if (b.empty()) continue;
    all_.insert(b, static_cast<int32_t>(id));
    JsonPrefix s = in_string;
    if (b.find_first_of("\"\\") == std::string::npos && s.feed(b)) {
      plain_[id >> 5] |= 1u << (id & 31);
      // Characters: the bytes that are not UTF-8 continuations (the token is valid UTF-8).
      const auto chars = std::count_if(b.begin(), b.end(), [](char c) { return (static_cast<uint8_t>(c) & 0xc0) != 0x80; });
      if (chars <= kShortChars) up_to_[static_cast<std::size_t>(chars)][id >> 5] |= 1u << (id & 31);
      else long_.insert(b, static_cast<int32_t>(id));
    } else {
      rest_.insert(b, static_cast<int32_t>(id));
      long_.insert(b, static_cast<int32_t>(id));
    }
  }
  for (std::size_t c = 1; c < up_to_.size(); ++c)
    for (std::size_t w = 0; w < plain_.size(); ++w) up_to_[c][w] |= up_to_[c - 1][w];
  flat_ = std::make_unique<const Flat>(all_, vocab_);
}

TokenTrie::Flat::Flat(const Trie& t, int64_t vocab) {
  const std::size_t n = t.nodes.size() - 1;  // the root is not stored
  const auto no_token = static_cast<uint32_t>((vocab + 31) / 32 * 32);
  byte.reserve(n), depth.reserve(n), bit.reserve(n), node.reserve(n), end.assign(n, 0);
  // Depth-first, each node's index taken when it is entered, its end when its subtree is done.
  struct Open {
    int32_t node, child, index;
  };
  std::vector<Open> path{{0, t.nodes[0].first_child, -1}};
  while (!path.empty()) {
    Open& top = path.back();
    if (top.child < 0) {
      if (top.index >= 0) end[static_cast<std::size_t>(top.index)] = static_cast<int32_t>(byte.size());
      path.pop_back();
      continue;
    }
    const int32_t c = top.child;
    const Node& x = t.nodes[static_cast<std::size_t>(c)];
    top.child = x.next_sibling;
    const auto index = static_cast<int32_t>(byte.size());
    byte.push_back(x.byte);
    depth.push_back(static_cast<uint16_t>(path.size()));
    bit.push_back(x.token >= 0 ? static_cast<uint32_t>(x.token) : no_token);
    node.push_back(c);
    max_depth = std::max(max_depth, path.size());
    path.push_back({c, x.first_child, index});
  }
}

void TokenTrie::Trie::copy_same(std::vector<uint32_t>& allowed) const {
  auto bit = [](int32_t id) { return 1u << (id & 31); };
  for (std::size_t i = 0; i + 1 < same_bytes.size(); i += 2) {
    const int32_t id = same_bytes[i], first = same_bytes[i + 1];
    if (allowed[static_cast<std::size_t>(first) >> 5] & bit(first)) allowed[static_cast<std::size_t>(id) >> 5] |= bit(id);
  }
}

// The JSON recognizers read strings by the same rules, so they share the plain-token set.
template <typename Json>
void TokenTrie::allowed_json(const Json& from, std::vector<uint32_t>& allowed) const {
  const int64_t room = from.plain_room();
  const Trie* t = &all_;
  if (room == std::numeric_limits<int64_t>::max()) {
    allowed = plain_, t = &rest_;
  } else if (room >= 0) {  // the plain tokens that fit, then the rest and the long ones walked
    allowed = up_to_[static_cast<std::size_t>(std::min(room, kShortChars))], t = &long_;
  } else {
    allowed.assign(static_cast<std::size_t>(mask_words()), 0);
  }
  t->walk(0, from, allowed);
  t->copy_same(allowed);
}

void TokenTrie::allowed(const JsonPrefix& from, std::vector<uint32_t>& allowed) const { allowed_json(from, allowed); }
void TokenTrie::allowed(const SchemaPrefix& from, std::vector<uint32_t>& allowed) const {
  int32_t state = 0;
  if (const Regex* re = from.pattern_state(state)) return allowed_pattern_string(from, *re, state, allowed);
  allowed_json(from, allowed);
}

template <typename OnRefused>
void TokenTrie::walk_flat(const RegexPrefix& from, std::vector<uint32_t>& allowed, OnRefused on_refused) const {
  const auto words = static_cast<std::size_t>(mask_words());
  allowed.assign(words + 1, 0);  // a node with no token sets a bit of the word past the mask
  const Flat& f = *flat_;
  // at[d]: the state after the first d bytes of the node being looked at; path: those bytes.
  std::vector<RegexPrefix> at(f.max_depth + 1, from);
  std::string path(f.max_depth, '\0');
  const auto n = static_cast<int32_t>(f.byte.size());
  for (int32_t i = 0; i < n;) {
    const auto k = static_cast<std::size_t>(i);
    const std::size_t d = f.depth[k];
    path[d - 1] = static_cast<char>(f.byte[k]);
    RegexPrefix next = at[d - 1];
    if (!next.feed(f.byte[k])) {  // and every token under it, unless on_refused takes them
      on_refused(k, at[d - 1], std::string_view(path.data(), d));
      i = f.end[k];
      continue;
    }
    at[d] = next;
    const uint32_t t = f.bit[k];
    allowed[t >> 5] |= 1u << (t & 31);
    ++i;
  }
  allowed.resize(words);
  all_.copy_same(allowed);
}

void TokenTrie::allowed_pattern_string(const SchemaPrefix& from, const Regex& re, int32_t state,
                                       std::vector<uint32_t>& allowed) const {
  // A '"' the DFA does not take closes the string where it accepts (one inside it comes escaped):
  // what follows is the schema's, for the few tokens under it.
  walk_flat(RegexPrefix(re, state), allowed, [&](std::size_t k, const RegexPrefix& at, std::string_view path) {
    SchemaPrefix p = from;
    if (path.back() != '"' || !at.complete() || !p.feed(path)) return;
    allowed[flat_->bit[k] >> 5] |= 1u << (flat_->bit[k] & 31);
    all_.walk(flat_->node[k], p, allowed);
  });
}

void TokenTrie::allowed(const ChoicePrefix& from, std::vector<uint32_t>& allowed) const {
  allowed.assign(static_cast<std::size_t>(mask_words()), 0);
  all_.walk(0, from, allowed);
  all_.copy_same(allowed);
}

void TokenTrie::allowed(const RegexPrefix& from, std::vector<uint32_t>& allowed) const {
  walk_flat(from, allowed, [](std::size_t, const RegexPrefix&, std::string_view) {});
}

}  // namespace dpa::engine
