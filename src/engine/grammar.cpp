// The grammar recognizer of grammar.h: the frame arena, one byte's parse step over every parse at
// once, GrammarPrefix, and TokenTrie's mask walk for it (a lazily built automaton of the states
// the walk meets). The parser is in grammar_parse.cpp.
#include "engine/grammar.h"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "core/error.h"
#include "engine/compile_cache.h"
#include "engine/structured_output.h"

namespace dpa::engine {
namespace grammar_detail {
namespace {

// A UTF-8 character being read at a class (Item::utf8): the bits so far, the continuation bytes
// still to come and the character's length. Never 0 (rem >= 1).
constexpr uint32_t partial(uint32_t value, uint32_t rem, uint32_t len) {
  return value | rem << 24 | len << 28;
}
constexpr uint32_t partial_value(uint32_t p) {
  return p & 0x1fffff;
}
constexpr uint32_t partial_rem(uint32_t p) {
  return (p >> 24) & 0xf;
}
constexpr uint32_t partial_len(uint32_t p) {
  return p >> 28;
}

// Byte c at a class, from `p` (0 or a partial character): 0 refused, 1 a character of the class
// was read whole, 2 a prefix some character of the class has (*out: the new partial).
int class_step(const CharClass& k, uint32_t p, uint8_t c, uint32_t* out) {
  uint32_t value, rem, len;
  if (p == 0) {
    if (c < 0x80) return k.has_ascii(c) ? 1 : 0;
    len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4) return 0;
    value = c & (0x7fu >> len), rem = len - 1;
  } else {
    if ((c & 0xc0) != 0x80) return 0;
    value = partial_value(p) << 6 | (c & 0x3f), rem = partial_rem(p) - 1, len = partial_len(p);
  }
  // The code points this prefix can still become, within what its length encodes (no overlong
  // forms, nothing past U+10FFFF; the classes hold no surrogates).
  static constexpr uint32_t kLo[] = {0, 0, 0x80, 0x800, 0x10000}, kHi[] = {0, 0x7f, 0x7ff, 0xffff, 0x10ffff};
  const uint32_t lo = std::max(value << (6 * rem), kLo[len]);
  const uint32_t hi = std::min(value << (6 * rem) | ((1u << (6 * rem)) - 1), kHi[len]);
  if (lo > hi || !k.intersects(lo, hi)) return 0;
  if (rem == 0) return 1;
  *out = partial(value, rem, len);
  return 2;
}

// A set of 64-bit keys, cleared in O(1) (generation stamps); for the closure's visited positions
// and the walk's tables.
class KeySet {
 public:
  void clear() {
    if (++gen_ == 0) std::fill(stamp_.begin(), stamp_.end(), 0), gen_ = 1;
    n_ = 0;
  }
  bool insert(uint64_t key) {  // whether it was new
    if (2 * (n_ + 1) > stamp_.size()) grow();
    std::size_t i = hash(key) & (stamp_.size() - 1);
    for (; stamp_[i] == gen_; i = (i + 1) & (stamp_.size() - 1))
      if (keys_[i] == key) return false;
    stamp_[i] = gen_, keys_[i] = key, ++n_;
    return true;
  }
  std::size_t size() const { return n_; }

 private:
  static std::size_t hash(uint64_t k) { return static_cast<std::size_t>((k * 0x9e3779b97f4a7c15ull) >> 20); }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<uint32_t> old_stamp = std::move(stamp_);
    const std::size_t cap = std::max<std::size_t>(64, old_stamp.size() * 2);
    keys_.assign(cap, 0), stamp_.assign(cap, 0);
    const uint32_t old_gen = gen_;
    gen_ = 1, n_ = 0;
    for (std::size_t i = 0; i < old_stamp.size(); ++i)
      if (old_stamp[i] == old_gen) insert(old_keys[i]);
  }
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> stamp_;
  uint32_t gen_ = 1;
  std::size_t n_ = 0;
};

uint64_t pos_key(int32_t pos, int32_t frame) {
  return static_cast<uint64_t>(static_cast<uint32_t>(pos)) << 32 | static_cast<uint32_t>(frame);
}

}  // namespace

// A recognizer's arena of stack frames (hash-consed: one id per (return position, parent)), and
// the scratch of its parse steps. Shared by a recognizer's copies, used by one thread at a time
// (a sequence's masks are walked by one thread).
class Context {
 public:
  struct Frame {
    int32_t ret, parent, depth;  // return position, the frame below (-1: none), frames in the stack
  };
  using Items = SmallVec<GrammarPrefix::Item, 8>;

  explicit Context(const Rules& g) : g_(g) {}

  std::vector<Frame> frames;
  int64_t work = 0;      // parse steps since the caller reset it (items read + positions visited)
  bool limited = false;  // a parse was dropped at a limit since the caller reset it
  std::size_t compact_at = 65536;

  // The frame (ret, parent), made if new; -1 past Grammar::kMaxDepth.
  int32_t push(int32_t ret, int32_t parent) {
    const int32_t depth = parent < 0 ? 1 : frames[static_cast<std::size_t>(parent)].depth + 1;
    if (depth > Grammar::kMaxDepth) return -1;
    if (2 * (frames.size() + 1) > table_.size()) rehash(std::max<std::size_t>(64, table_.size() * 2));
    std::size_t i = slot(ret, parent);
    for (; table_[i] >= 0; i = (i + 1) & (table_.size() - 1)) {
      const Frame& f = frames[static_cast<std::size_t>(table_[i])];
      if (f.ret == ret && f.parent == parent) return table_[i];
    }
    table_[i] = static_cast<int32_t>(frames.size());
    frames.push_back({ret, parent, depth});
    return table_[i];
  }

  // Drops the frames made after the first n, newest first: with linear probing, a key inserted
  // last sits where no older key's probe passed, so its slot is simply emptied.
  void truncate(std::size_t n) {
    while (frames.size() > n) {
      const Frame& f = frames.back();
      std::size_t i = slot(f.ret, f.parent);
      while (table_[i] != static_cast<int32_t>(frames.size() - 1)) i = (i + 1) & (table_.size() - 1);
      table_[i] = -1;
      frames.pop_back();
    }
  }

  // The items and completeness after byte c from `from` (sorted items); false when c is refused
  // (no parse takes it, or the parses that do pass kMaxItems).
  bool step(const GrammarPrefix::Item* from, std::size_t n, uint8_t c, Items& out, bool& complete) {
    seen_.clear(), todo_.clear(), out.clear();
    complete = false;
    work += static_cast<int64_t>(n);
    for (std::size_t k = 0; k < n; ++k) {
      const GrammarPrefix::Item& it = from[k];
      const Element& e = g_.elements[static_cast<std::size_t>(it.pos)];
      if (e.kind == Kind::byte) {
        if (e.byte == c) visit(it.pos + 1, it.frame);
        continue;
      }
      uint32_t p = 0;
      const int r = class_step(g_.classes[static_cast<std::size_t>(e.arg)], it.utf8, c, &p);
      if (r == 1)
        visit(it.pos + 1, it.frame);
      else if (r == 2 && seen_.insert(pos_key(it.pos, it.frame)))
        out.push_back({it.pos, it.frame, p});
    }
    const int64_t read = work;
    if (!closure(out, complete)) {
      // Where the closure stopped depends on the order it went in: count the cap, not its steps.
      work = read + static_cast<int64_t>(Grammar::kMaxClosure);
      limited = true;
      return false;
    }
    if (out.size() > Grammar::kMaxItems) {
      limited = true;
      return false;
    }
    std::sort(out.data(), out.data() + out.size());
    return out.size() > 0 || complete;
  }

  // The items where root's alternatives begin; false past the limits.
  bool start(Items& out, bool& complete) {
    seen_.clear(), todo_.clear(), out.clear();
    complete = false;
    enter(g_.root, -1);
    const bool fits = closure(out, complete) && out.size() <= Grammar::kMaxItems;
    std::sort(out.data(), out.data() + out.size());
    return fits;
  }

 private:
  void visit(int32_t pos, int32_t frame) {
    if (seen_.insert(pos_key(pos, frame))) todo_.push_back({pos, frame});
  }
  void enter(int32_t rule, int32_t frame) {
    const auto r = static_cast<std::size_t>(rule);
    for (int32_t a = g_.alt_begin[r]; a < g_.alt_begin[r + 1]; ++a)
      visit(g_.alts[static_cast<std::size_t>(a)], frame);
  }
  // Every position reachable from todo_ without reading: rule calls entered (a frame pushed unless
  // the call is its alternative's last symbol), ends returned from; the byte and class positions
  // reached are the new items. Left recursion is refused at compile time, so this ends; false when
  // it passes kMaxClosure positions. Its work (a step per position) depends only on the set of
  // positions reached, so every rank, and every recognizer in the same state up to frame ids,
  // counts the same: a mask's walk meets its work cap, and fails its request, alike everywhere.
  bool closure(Items& out, bool& complete) {
    while (!todo_.empty()) {
      if (seen_.size() > Grammar::kMaxClosure) return false;
      const auto [pos, frame] = todo_.back();
      todo_.pop_back();
      ++work;
      const Element& e = g_.elements[static_cast<std::size_t>(pos)];
      switch (e.kind) {
        case Kind::byte:
        case Kind::cls:
          out.push_back({pos, frame, 0});
          break;
        case Kind::rule: {
          int32_t f = frame;
          if (g_.elements[static_cast<std::size_t>(pos) + 1].kind != Kind::end &&
              (f = push(pos + 1, frame)) < 0) {
            limited = true;  // deeper than kMaxDepth: this parse is not followed
            break;
          }
          enter(e.arg, f);
          break;
        }
        case Kind::end:
          if (frame < 0) {
            complete = true;
          } else {
            const Frame& f = frames[static_cast<std::size_t>(frame)];
            visit(f.ret, f.parent);
          }
          break;
      }
    }
    return true;
  }

  std::size_t slot(int32_t ret, int32_t parent) const {
    const uint64_t k = pos_key(ret, parent) * 0x9e3779b97f4a7c15ull;
    return static_cast<std::size_t>(k >> 24) & (table_.size() - 1);
  }
  void rehash(std::size_t cap) {  // in id order, so that truncate()'s rule holds after it too
    table_.assign(cap, -1);
    for (std::size_t id = 0; id < frames.size(); ++id) {
      std::size_t i = slot(frames[id].ret, frames[id].parent);
      while (table_[i] >= 0) i = (i + 1) & (table_.size() - 1);
      table_[i] = static_cast<int32_t>(id);
    }
  }

  const Rules& g_;
  std::vector<int32_t> table_;  // frame ids by (ret, parent), -1: empty
  KeySet seen_;
  std::vector<std::pair<int32_t, int32_t>> todo_;
};

}  // namespace grammar_detail

using grammar_detail::Context;

// ---- Grammar

std::shared_ptr<const Grammar> Grammar::compile(std::string_view text) {
  std::shared_ptr<Grammar> g(new Grammar());
  g->r_ = grammar_detail::parse(text);
  // Every recognizer starts here: a start past kMaxItems could not be followed at all.
  Context cx(g->r_);
  Context::Items items;
  bool complete = false;
  if (!cx.start(items, complete))
    throw Error(
        fmt::format("the grammar's start has more parses at once than the {} followed (ambiguity: e.g. "
                    "repetitions of groups that may be empty, nested)",
                    kMaxItems));
  if (items.size() == 0 && !complete)
    throw Error(fmt::format("the grammar's first character is more than {} rules deep", kMaxDepth));
  return g;
}

std::shared_ptr<const Grammar> Grammar::compile_cached(std::string_view text) {
  // At most 64 MiB of grammars (a capped one holds a few MB) and 1,024 texts.
  static CompileCache<Grammar> cache(1024, 64u << 20);
  if (text.size() > kMaxText) return compile(text);  // refused at once; not kept
  return cache.get(
      std::string(text), [&] { return compile(text); }, [](const Grammar& g) { return g.bytes(); });
}

std::size_t Grammar::bytes() const {
  std::size_t n = sizeof(Grammar) + r_.elements.capacity() * sizeof(grammar_detail::Element) +
                  (r_.alt_begin.capacity() + r_.alts.capacity()) * sizeof(int32_t);
  for (const auto& k : r_.classes) n += sizeof(k) + k.ranges.capacity() * sizeof(k.ranges[0]);
  for (const auto& o : r_.origin) n += sizeof(o) + o.capacity();
  return n;
}

int32_t Grammar::state_id(const std::string& key) const {
  if (key.empty()) return -1;
  std::lock_guard<std::mutex> lock(ids_mu_);
  if (const auto it = ids_.find(key); it != ids_.end()) return it->second;
  if (ids_.size() >= 65536 || id_bytes_ + key.size() > (std::size_t{16} << 20)) return -1;
  id_bytes_ += key.size();
  const auto id = static_cast<int32_t>(ids_.size());
  ids_.emplace(key, id);
  return id;
}

// ---- GrammarPrefix

GrammarPrefix::GrammarPrefix(const Grammar& g) : g_(&g), cx_(std::make_shared<Context>(g.rules())) {
  cx_->start(items_, complete_);  // within the limits: compile() checked
}

bool GrammarPrefix::feed(uint8_t c) {
  Context::Items next;
  bool complete = false;
  if (!cx_->step(items_.data(), items_.size(), c, next, complete)) return false;
  items_ = std::move(next);
  complete_ = complete;
  return true;
}

bool GrammarPrefix::same_as(const GrammarPrefix& o) const {
  if (cx_ != o.cx_ || items_.size() != o.items_.size()) return false;
  for (std::size_t i = 0; i < items_.size(); ++i)
    if (!(items_[i] == o.items_[i])) return false;
  return true;
}

std::string GrammarPrefix::key() const {
  // Each item as its position, partial character and return positions down the stack; the items
  // sorted by that, so that states equal up to frame ids get the same key.
  constexpr std::size_t kMaxKey = 4096;
  std::vector<std::string> parts;
  parts.reserve(items_.size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < items_.size(); ++i) {
    std::string s;
    auto put = [&](uint32_t v) { s.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    put(static_cast<uint32_t>(items_[i].pos)), put(items_[i].utf8);
    for (int32_t f = items_[i].frame; f >= 0; f = cx_->frames[static_cast<std::size_t>(f)].parent) {
      put(static_cast<uint32_t>(cx_->frames[static_cast<std::size_t>(f)].ret));
      if (s.size() > kMaxKey) return {};
    }
    total += s.size() + 4;
    if (total > kMaxKey) return {};
    parts.push_back(std::move(s));
  }
  std::sort(parts.begin(), parts.end());
  std::string key;
  for (const auto& p : parts) {
    const auto len = static_cast<uint32_t>(p.size());
    key.append(reinterpret_cast<const char*>(&len), sizeof(len));
    key += p;
  }
  return key.empty() ? std::string(1, '\0') : key;  // the state with no items (complete, nothing may follow)
}

std::size_t GrammarPrefix::arena_frames() const { return cx_->frames.size(); }
bool GrammarPrefix::met_limit() const { return cx_->limited; }

void GrammarPrefix::compact_if_sparse() {
  Context& old = *cx_;
  if (old.frames.size() <= old.compact_at) return;
  auto fresh = std::make_shared<Context>(g_->rules());
  // Frames in the new arena by their old id, parents first (each made once: push() hash-conses).
  std::vector<int32_t> chain;
  std::unordered_map<int32_t, int32_t> moved;
  for (std::size_t i = 0; i < items_.size(); ++i) {
    chain.clear();
    for (int32_t f = items_[i].frame; f >= 0 && !moved.count(f);
         f = old.frames[static_cast<std::size_t>(f)].parent)
      chain.push_back(f);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      const auto& fr = old.frames[static_cast<std::size_t>(*it)];
      moved[*it] = fresh->push(fr.ret, fr.parent < 0 ? -1 : moved.at(fr.parent));
    }
    if (items_[i].frame >= 0) items_[i].frame = moved.at(items_[i].frame);
  }
  std::sort(items_.data(), items_.data() + items_.size());
  fresh->compact_at = std::max<std::size_t>(65536, 4 * fresh->frames.size());
  cx_ = std::move(fresh);
}

// ---- the mask walk

namespace {

// The states a walk meets, each named once (by its sorted items and completeness), and their
// transitions: the first states' in rows of 256, the others' in a hash table.
class WalkStates {
 public:
  static constexpr int32_t kRefused = -1, kUnknown = -2;
  static constexpr std::size_t kDenseStates = 1024;

  int32_t intern(const GrammarPrefix::Item* items, std::size_t n) {
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    for (std::size_t k = 0; k < n; ++k) {
      h = (h ^ static_cast<uint32_t>(items[k].pos)) * 0x100000001b3ull;
      h = (h ^ static_cast<uint32_t>(items[k].frame)) * 0x100000001b3ull;
      h = (h ^ items[k].utf8) * 0x100000001b3ull;
    }
    if (2 * (begin_.size() + 1) > index_.size()) reindex(std::max<std::size_t>(256, index_.size() * 2));
    std::size_t i = h & (index_.size() - 1);
    for (; index_[i] >= 0; i = (i + 1) & (index_.size() - 1)) {
      const auto s = static_cast<std::size_t>(index_[i]);
      if (hash_[s] == h && begin_[s + 1] - begin_[s] == n &&
          std::equal(items, items + n, items_.begin() + static_cast<std::ptrdiff_t>(begin_[s])))
        return index_[i];
    }
    const auto id = static_cast<int32_t>(hash_.size());
    index_[i] = id;
    hash_.push_back(h);
    items_.insert(items_.end(), items, items + n);
    begin_.push_back(items_.size());
    if (hash_.size() <= kDenseStates) dense_.resize(hash_.size() * 256, kUnknown);
    return id;
  }
  const GrammarPrefix::Item* items(int32_t s) const {
    return items_.data() + begin_[static_cast<std::size_t>(s)];
  }
  std::size_t size(int32_t s) const {
    return begin_[static_cast<std::size_t>(s) + 1] - begin_[static_cast<std::size_t>(s)];
  }

  int32_t& next(int32_t s, uint8_t b) {  // kUnknown until set
    if (static_cast<std::size_t>(s) < kDenseStates) return dense_[static_cast<std::size_t>(s) * 256 + b];
    return sparse_.try_emplace(static_cast<uint64_t>(s) << 8 | b, kUnknown).first->second;
  }

 private:
  void reindex(std::size_t cap) {
    index_.assign(cap, -1);
    for (std::size_t s = 0; s < hash_.size(); ++s) {
      std::size_t i = hash_[s] & (cap - 1);
      while (index_[i] >= 0) i = (i + 1) & (cap - 1);
      index_[i] = static_cast<int32_t>(s);
    }
  }
  std::vector<GrammarPrefix::Item> items_;
  std::vector<std::size_t> begin_{0};
  std::vector<uint64_t> hash_;
  std::vector<int32_t> index_;
  std::vector<int32_t> dense_;
  std::unordered_map<uint64_t, int32_t> sparse_;
};

}  // namespace

GrammarWalk TokenTrie::allowed(const GrammarPrefix& from, std::vector<uint32_t>& allowed) const {
  Context& cx = *from.cx_;
  const std::size_t mark = cx.frames.size();
  cx.work = 0, cx.limited = false;
  GrammarWalk out;
  const auto words = static_cast<std::size_t>(mask_words());
  allowed.assign(words + 1, 0);  // a node with no token sets a bit of the word past the mask
  const Flat& f = *flat_;
  WalkStates states;
  std::vector<int32_t> at(f.max_depth + 1, 0);  // at[d]: the state after the node's first d bytes
  at[0] = states.intern(from.items_.data(), from.items_.size());
  Context::Items scratch;
  const auto n = static_cast<int32_t>(f.byte.size());
  for (int32_t i = 0; i < n;) {
    const auto k = static_cast<std::size_t>(i);
    const std::size_t d = f.depth[k];
    const int32_t s = at[d - 1];
    int32_t t = states.next(s, f.byte[k]);
    if (t == WalkStates::kUnknown) {
      bool complete = false;
      t = cx.step(states.items(s), states.size(s), f.byte[k], scratch, complete)
              ? states.intern(scratch.data(), scratch.size())
              : WalkStates::kRefused;
      states.next(s, f.byte[k]) = t;
      if (cx.work > Grammar::kMaxWalkWork) {
        out.over_budget = true;
        break;
      }
    }
    if (t < 0) {  // and every token under it
      i = f.end[k];
      continue;
    }
    at[d] = t;
    const uint32_t b = f.bit[k];
    allowed[b >> 5] |= 1u << (b & 31);
    ++i;
  }
  allowed.resize(words);
  all_.copy_same(allowed);
  out.limited = cx.limited;
  cx.truncate(mark);
  return out;
}

}  // namespace dpa::engine
