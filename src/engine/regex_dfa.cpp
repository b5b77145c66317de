// The automata of regex.h, from the parser's tree (regex.cpp): a Thompson NFA over bytes, in
// which a character class is spelt as the UTF-8 byte-range sequences of its code points (as RE2
// and Rust's regex-automata do), then a DFA by subset construction; then the states from which no
// match is reachable are removed and the bytes no state tells apart share a class. Each step is
// bounded by Regex's caps before it allocates (the NFA is counted before it is built), and nothing
// depends on pointer values or hash-table order: the same pattern gives the same DFA on every rank.
#include <algorithm>
#include <bit>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "core/error.h"
#include "engine/regex.h"
#include "engine/regex_internal.h"

namespace dpa::engine::regex_detail {
namespace {

[[noreturn]] void too_complex(const std::string& what) {
  throw Error("the pattern is too complex: " + what);
}

int encode(uint32_t cp, uint8_t* out) {
  if (cp < 0x80) return out[0] = static_cast<uint8_t>(cp), 1;
  const int n = cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  for (int k = n - 1; k > 0; --k, cp >>= 6) out[k] = static_cast<uint8_t>(0x80 | (cp & 0x3f));
  static constexpr uint8_t kLead[] = {0, 0, 0xc0, 0xe0, 0xf0};
  out[0] = static_cast<uint8_t>(kLead[n] | cp);
  return n;
}

// A sequence of byte ranges: the UTF-8 encodings of a block of code points.
struct Seq {
  int n = 0;
  uint8_t lo[4], hi[4];
};

// Splits [lo, hi] (no surrogates) into blocks whose encodings are a product of byte ranges: first
// by encoded length, then where a continuation byte would not run over its whole 80..BF.
void utf8_sequences(uint32_t lo, uint32_t hi, std::vector<Seq>& out) {
  for (const uint32_t edge : {0x7fu, 0x7ffu, 0xffffu})
    if (lo <= edge && hi > edge) {
      utf8_sequences(lo, edge, out);
      utf8_sequences(edge + 1, hi, out);
      return;
    }
  for (int k = 1; k < 4; ++k) {
    const uint32_t m = (1u << (6 * k)) - 1;  // the bits of the last k bytes
    if ((lo & ~m) == (hi & ~m)) continue;
    if ((lo & m) != 0) {
      utf8_sequences(lo, lo | m, out);
      utf8_sequences((lo | m) + 1, hi, out);
      return;
    }
    if ((hi & m) != m) {
      utf8_sequences(lo, (hi & ~m) - 1, out);
      utf8_sequences(hi & ~m, hi, out);
      return;
    }
  }
  Seq s;
  s.n = encode(lo, s.lo);
  encode(hi, s.hi);
  out.push_back(s);
}

// ---------------------------------------------------------------------------------------------
// The NFA. A state takes bytes along its edges (kRanges) or passes on along them without one
// (kEps: a split of any width); every edge's target sits in the one `to` field, so a fragment's
// dangling edges are a list threaded through those fields (Thompson's construction, as in
// Russ Cox's write-up): patching one is O(1) and no edge moves.

struct NState {
  enum Kind : uint8_t { kRanges, kEps, kMatch };
  Kind kind = kEps;
  int32_t first = 0, n = 0;  // its edges: edges[first, first + n)
};
struct Edge {
  uint8_t lo = 0, hi = 0;  // kRanges: the bytes it takes
  int32_t to = -1;
};

// A class's states, made once and copied for each use; an edge to kExit leaves the class.
struct Recipe {
  static constexpr int32_t kExit = -2;
  std::vector<NState> states;
  std::vector<Edge> edges;
  int32_t start = 0;
  int64_t units() const { return static_cast<int64_t>(states.size() + edges.size()); }
};

// The sequences share their common tails, one single-edge state per (lo, hi, next); the start
// state has an edge per sequence. An empty class is a start state without edges.
Recipe recipe(const Ranges& set) {
  std::vector<Seq> seqs;
  for (const auto& [lo, hi] : set) {  // less the surrogates
    if (lo < 0xd800) utf8_sequences(lo, std::min(hi, 0xd7ffu), seqs);
    if (hi > 0xdfff) utf8_sequences(std::max(lo, 0xe000u), hi, seqs);
  }
  Recipe r;
  std::map<std::tuple<uint8_t, uint8_t, int32_t>, int32_t> tails;
  std::vector<Edge> heads;
  for (const Seq& s : seqs) {
    int32_t next = Recipe::kExit;
    for (int k = s.n - 1; k > 0; --k) {
      const auto [it, fresh] =
          tails.try_emplace({s.lo[k], s.hi[k], next}, static_cast<int32_t>(r.states.size()));
      if (fresh) {
        r.states.push_back(NState{NState::kRanges, static_cast<int32_t>(r.edges.size()), 1});
        r.edges.push_back(Edge{s.lo[k], s.hi[k], next});
      }
      next = it->second;
    }
    heads.push_back(Edge{s.lo[0], s.hi[0], next});
  }
  r.start = static_cast<int32_t>(r.states.size());
  r.states.push_back(
      NState{NState::kRanges, static_cast<int32_t>(r.edges.size()), static_cast<int32_t>(heads.size())});
  r.edges.insert(r.edges.end(), heads.begin(), heads.end());
  return r;
}

class NfaBuilder {
 public:
  NfaBuilder(const Tree& t) : t_(t) {
    for (const Ranges& r : t.sets) recipes_.push_back(recipe(r));
  }
  std::vector<NState> states;
  std::vector<Edge> edges;

  // The states and edges node n will take, at most kMaxNfa + 1.
  int64_t units(int32_t n) const {
    constexpr int64_t cap = Regex::kMaxNfa + 1;
    const Node& x = t_.nodes[static_cast<std::size_t>(n)];
    int64_t s = 0;
    switch (x.kind) {
      case Node::kSet:
        return recipes_[static_cast<std::size_t>(x.set)].units();
      case Node::kConcat:
      case Node::kAlt:
        for (const int32_t k : x.kids) s = std::min(cap, s + units(k));
        return std::min(cap, s + (x.kind == Node::kAlt ? 1 + static_cast<int64_t>(x.kids.size()) : 0));
      case Node::kRepeat: {
        const int64_t k = units(x.kids[0]);
        if (x.max == 0) return 2;
        if (x.max < 0) return std::min(cap, std::max<int64_t>(x.min, 1) * k + 3);
        return std::min(cap, x.min * k + (x.max - x.min) * (k + 3));
      }
      default:
        return 2;
    }
  }

  // Builds the NFA; its last state is the match state. Returns the start state.
  int32_t build() {
    const int64_t n = units(t_.root);
    if (n > Regex::kMaxNfa)
      too_complex("more than " + std::to_string(Regex::kMaxNfa) +
                  " NFA states and edges once its repeats are expanded");
    states.reserve(static_cast<std::size_t>(n) + 1);
    edges.reserve(static_cast<std::size_t>(n));
    const Frag f = emit(t_.root);
    patch(f, add(NState::kMatch, 0));
    return f.start;
  }

 private:
  // A fragment: its start state and its dangling edges, a list through their `to` (-1 ends it).
  struct Frag {
    int32_t start = -1, head = -1, tail = -1;
  };

  int32_t add(NState::Kind kind, int32_t n_edges) {
    states.push_back(NState{kind, static_cast<int32_t>(edges.size()), n_edges});
    edges.resize(edges.size() + static_cast<std::size_t>(n_edges));
    return static_cast<int32_t>(states.size() - 1);
  }
  void patch(const Frag& f, int32_t target) {
    for (int32_t e = f.head; e != -1;) {
      const int32_t next = edges[static_cast<std::size_t>(e)].to;
      edges[static_cast<std::size_t>(e)].to = target;
      e = next;
    }
  }
  Frag append(Frag a, const Frag& b) {  // a's start; a's dangling edges, then b's
    if (b.head == -1) return a;
    if (a.head == -1) return Frag{a.start, b.head, b.tail};
    edges[static_cast<std::size_t>(a.tail)].to = b.head;
    return Frag{a.start, a.head, b.tail};
  }
  Frag seq(const Frag& a, const Frag& b) {  // a, then b
    if (a.start == -1) return b;
    patch(a, b.start);
    return Frag{a.start, b.head, b.tail};
  }
  // An epsilon state whose edge 0 goes to `to` (when not -1) and whose others dangle.
  Frag split(int32_t n_edges, int32_t to) {
    const int32_t s = add(NState::kEps, n_edges);
    const int32_t e = states[static_cast<std::size_t>(s)].first;
    Frag f{s, -1, -1};
    for (int32_t i = to == -1 ? 0 : 1; i < n_edges; ++i) f = append(f, Frag{s, e + i, e + i});
    if (to != -1) edges[static_cast<std::size_t>(e)].to = to;
    return f;
  }

  Frag emit(int32_t n) {
    const Node& x = t_.nodes[static_cast<std::size_t>(n)];
    switch (x.kind) {
      case Node::kSet:
        return instantiate(recipes_[static_cast<std::size_t>(x.set)]);
      case Node::kConcat: {
        Frag f;
        for (const int32_t k : x.kids) f = seq(f, emit(k));
        return f;
      }
      case Node::kAlt: {  // one epsilon state, an edge to each alternative
        const auto k = static_cast<int32_t>(x.kids.size());
        const int32_t s = add(NState::kEps, k);
        Frag out{s, -1, -1};
        for (int32_t i = 0; i < k; ++i) {
          const Frag f = emit(x.kids[static_cast<std::size_t>(i)]);
          edges[static_cast<std::size_t>(states[static_cast<std::size_t>(s)].first + i)].to = f.start;
          out = append(out, f);
        }
        return out;
      }
      case Node::kRepeat:
        return repeat(x);
      default:
        return split(1, -1);  // the empty text; anchors are no-ops once placed
    }
  }

  Frag repeat(const Node& x) {
    const int32_t kid = x.kids[0];
    if (x.max == 0) return split(1, -1);
    Frag f;
    for (int64_t i = x.max < 0 ? 1 : 0; i < x.min; ++i) f = seq(f, emit(kid));  // x{n,} is x{n-1} x+
    if (x.max < 0) {  // a loop back through an epsilon state: x* (entered there) or x+ (at x)
      const Frag body = emit(kid);
      Frag loop = split(2, body.start);
      patch(body, loop.start);
      if (x.min > 0) loop.start = body.start;
      return seq(f, loop);
    }
    // x{n,m}: m - n nested optional copies, x(x(x)?)?)?, each one's split able to skip to the end.
    Frag skips;
    for (int64_t i = x.min; i < x.max; ++i) {
      const Frag body = emit(kid);
      const Frag opt = split(2, body.start);
      f = seq(f, Frag{opt.start, body.head, body.tail});
      skips = append(skips, Frag{-1, opt.head, opt.tail});
    }
    return append(f, skips);
  }

  Frag instantiate(const Recipe& r) {
    const auto base = static_cast<int32_t>(states.size()), edge_base = static_cast<int32_t>(edges.size());
    Frag f{base + r.start, -1, -1};
    for (NState s : r.states) {
      s.first += edge_base;
      states.push_back(s);
    }
    for (Edge e : r.edges) {
      const bool exit = e.to == Recipe::kExit;
      e.to = exit ? -1 : e.to + base;
      edges.push_back(e);
      const auto at = static_cast<int32_t>(edges.size() - 1);
      if (exit) f = append(f, Frag{-1, at, at});
    }
    return f;
  }

  const Tree& t_;
  std::vector<Recipe> recipes_;
};

// ---------------------------------------------------------------------------------------------
// The DFA: subset construction over the NFA's byte-taking and match states (epsilon states are
// followed through, not kept), then pruning and class merging.

// Ints in chunks that never move: the DFA's rows and keys grow without being copied (each copy
// would touch fresh pages again, the bulk of the time for the big automata).
class Store {
 public:
  int32_t* take(std::size_t n) {
    if (chunks_.empty() || used_ + n > size_) {
      size_ = std::max<std::size_t>(n, 1 << 16), used_ = 0;
      chunks_.emplace_back(new int32_t[size_]);
    }
    used_ += n;
    return chunks_.back().get() + (used_ - n);
  }

 private:
  std::vector<std::unique_ptr<int32_t[]>> chunks_;
  std::size_t used_ = 0, size_ = 0;
};

class Subsets {
 public:
  Subsets(const std::vector<NState>& states, const std::vector<Edge>& edges)
      : states_(states), edges_(edges), match_(static_cast<int32_t>(states.size()) - 1) {}

  void run(int32_t start) {
    // Byte classes: the bytes between consecutive range ends of the NFA's edges behave alike.
    std::array<bool, 257> edge{};
    edge[0] = true;
    for (const NState& s : states_)
      if (s.kind == NState::kRanges)
        for (int32_t e = s.first; e < s.first + s.n; ++e) edge[edges_[e].lo] = edge[edges_[e].hi + 1] = true;
    for (int b = 0, c = -1; b < 256; ++b) class_of_[b] = static_cast<uint8_t>(c += edge[b]);
    nc_ = static_cast<std::size_t>(class_of_[255]) + 1;

    mark_.assign(states_.size(), 0);
    slots_.assign(std::bit_ceil(static_cast<std::size_t>(2 * Regex::kMaxStates)), -1);
    closure(std::vector<int32_t>{start});
    intern();
    std::vector<std::vector<int32_t>> bucket(nc_);  // per class: the targets of its edges
    std::vector<std::pair<uint64_t, std::size_t>> sig;
    std::vector<std::size_t> same(nc_);
    for (std::size_t d = 0; d < accepting_.size(); ++d) {
      for (uint32_t k = 0; k < key_len_[d]; ++k) {
        const NState& x = states_[static_cast<std::size_t>(key_[d][k])];
        for (int32_t e = x.first; e < x.first + x.n; ++e) {
          const Edge& g = edges_[e];
          for (int c = class_of_[g.lo]; c <= class_of_[g.hi]; ++c)
            bucket[static_cast<std::size_t>(c)].push_back(g.to);
          spend(class_of_[g.hi] - class_of_[g.lo] + 1);
        }
      }
      // Classes with the same targets (most of a `.`'s bytes) go to the same state: one closure.
      sig.clear();
      for (std::size_t c = 0; c < nc_; ++c) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (const int32_t t : bucket[c]) h = (h ^ static_cast<uint32_t>(t)) * 0x100000001b3ull;
        if (!bucket[c].empty()) sig.push_back({h, c});
      }
      std::sort(sig.begin(), sig.end());
      spend(static_cast<int64_t>(nc_ * std::bit_width(nc_)));
      for (std::size_t i = 0, run = 0; i < sig.size(); ++i) {
        if (i == 0 || sig[i].first != sig[i - 1].first) run = i;
        same[sig[i].second] = sig[i].second;
        for (std::size_t j = run; j < i; ++j)
          if (same[sig[j].second] == sig[j].second && bucket[sig[j].second] == bucket[sig[i].second]) {
            same[sig[i].second] = sig[j].second;
            break;
          }
      }
      for (const auto& [h, c] : sig) {
        if (same[c] != c) continue;
        closure(bucket[c]);
        if (!found_.empty()) row_[d][c] = intern();
      }
      for (const auto& [h, c] : sig) row_[d][c] = row_[d][same[c]], bucket[c].clear();
    }
  }

  // Removes the states from which no match is reachable, numbers the others in the order they were
  // made, and merges the classes no state tells apart.
  Tables finish() const {
    const std::size_t n = accepting_.size();
    std::vector<int32_t> table(n * nc_);
    for (std::size_t st = 0; st < n; ++st) std::copy(row_[st], row_[st] + nc_, table.begin() + st * nc_);
    Tables out = prune(nc_, class_of_, table, accepting_);
    if (out.accepting.empty()) throw Error("the pattern matches no text");
    return out;
  }

 private:
  void spend(int64_t n) {
    if ((work_ += n) > Regex::kMaxWork)
      too_complex("building its automaton takes more than " + std::to_string(Regex::kMaxWork) + " steps");
  }

  // The byte-taking and match states reached from seeds through epsilon states, sorted, in found_.
  void closure(const std::vector<int32_t>& seeds) {
    ++stamp_;
    found_.clear();
    stack_.assign(seeds.begin(), seeds.end());
    int64_t visited = 0;
    while (!stack_.empty()) {
      const auto s = static_cast<std::size_t>(stack_.back());
      stack_.pop_back();
      if (mark_[s] == stamp_) continue;
      mark_[s] = stamp_;
      ++visited;
      const NState& x = states_[s];
      if (x.kind == NState::kEps) {
        for (int32_t e = x.first + x.n; e-- > x.first;) stack_.push_back(edges_[e].to);
      } else if (x.kind == NState::kMatch || x.n > 0) {
        found_.push_back(static_cast<int32_t>(s));
      }
    }
    spend(visited + static_cast<int64_t>(found_.size() * std::bit_width(found_.size())));
    std::sort(found_.begin(), found_.end());
  }

  // The DFA state whose key is found_, made when new.
  int32_t intern() {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const int32_t x : found_) h = (h ^ static_cast<uint32_t>(x)) * 0x100000001b3ull;
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = (h ^ h >> 29) & mask;
    for (; slots_[i] != -1; i = (i + 1) & mask) {
      const auto d = static_cast<std::size_t>(slots_[i]);
      if (key_len_[d] == found_.size() && std::equal(found_.begin(), found_.end(), key_[d])) return slots_[i];
    }
    const std::size_t n = accepting_.size();
    if (static_cast<int64_t>(n) + 1 > Regex::kMaxStates)
      too_complex("more than " + std::to_string(Regex::kMaxStates) + " automaton states");
    if (static_cast<int64_t>((n + 1) * nc_) > Regex::kMaxTable)
      too_complex("more than " + std::to_string(Regex::kMaxTable / static_cast<int64_t>(nc_)) +
                  " automaton states of " + std::to_string(nc_) + " byte classes");
    if (static_cast<int64_t>(key_total_ + found_.size()) > Regex::kMaxSubsets)
      too_complex("its automaton's states stand for more than " + std::to_string(Regex::kMaxSubsets) +
                  " NFA states in all");
    slots_[i] = static_cast<int32_t>(n);
    key_total_ += found_.size();
    int32_t* key = store_.take(found_.size());
    std::copy(found_.begin(), found_.end(), key);
    key_.push_back(key);
    key_len_.push_back(static_cast<uint32_t>(found_.size()));
    row_.push_back(store_.take(nc_));
    std::fill(row_.back(), row_.back() + nc_, -1);
    accepting_.push_back(!found_.empty() && found_.back() == match_);
    return static_cast<int32_t>(n);
  }

  const std::vector<NState>& states_;
  const std::vector<Edge>& edges_;
  const int32_t match_;  // the match state, the NFA's last: a key holding it ends with it
  std::array<uint8_t, 256> class_of_{};
  std::size_t nc_ = 1;
  Store store_;
  std::vector<int32_t*> row_;  // DFA state d: row_[d][class] -> state or -1
  std::vector<uint8_t> accepting_;
  std::vector<int32_t*> key_;  // DFA state d's key: the NFA states key_[d][0, key_len_[d]), sorted
  std::vector<uint32_t> key_len_;
  std::size_t key_total_ = 0;
  std::vector<int32_t> slots_;  // open addressing over the keys: DFA states, -1 free
  std::vector<uint32_t> mark_;
  uint32_t stamp_ = 0;
  std::vector<int32_t> stack_, found_;
  int64_t work_ = 0;
};

}  // namespace

Tables prune(std::size_t nc, const std::array<uint8_t, 256>& class_of, const std::vector<int32_t>& table,
             const std::vector<uint8_t>& accepting) {
  const std::size_t n = accepting.size();
  auto row = [&](std::size_t st) { return table.data() + st * nc; };
  std::vector<int32_t> first(n + 1, 0), last(n, -1);  // reverse edges, one per (from, to) pair
  auto each_edge = [&](auto&& f) {
    std::fill(last.begin(), last.end(), -1);
    for (std::size_t st = 0; st < n; ++st)
      for (std::size_t c = 0; c < nc; ++c)
        if (const int32_t t = row(st)[c]; t >= 0 && last[t] != static_cast<int32_t>(st))
          last[t] = static_cast<int32_t>(st), f(static_cast<int32_t>(st), t);
  };
  each_edge([&](int32_t, int32_t t) { ++first[static_cast<std::size_t>(t) + 1]; });
  for (std::size_t st = 0; st < n; ++st) first[st + 1] += first[st];
  std::vector<int32_t> from(static_cast<std::size_t>(first[n])), fill(first.begin(), first.end() - 1);
  each_edge([&](int32_t st, int32_t t) { from[static_cast<std::size_t>(fill[t]++)] = st; });
  std::vector<char> live(n, 0);
  std::vector<int32_t> queue;
  for (std::size_t st = 0; st < n; ++st)
    if (accepting[st]) live[st] = 1, queue.push_back(static_cast<int32_t>(st));
  for (std::size_t q = 0; q < queue.size(); ++q)
    for (int32_t i = first[queue[q]]; i < first[queue[q] + 1]; ++i)
      if (!live[from[i]]) live[from[i]] = 1, queue.push_back(from[i]);
  if (n == 0 || !live[0]) return Tables{};
  std::vector<int32_t> id(n, -1), kept;
  for (std::size_t st = 0; st < n; ++st)
    if (live[st]) id[st] = static_cast<int32_t>(kept.size()), kept.push_back(static_cast<int32_t>(st));
  auto target = [&](int32_t st, std::size_t c) {
    const int32_t t = row(static_cast<std::size_t>(st))[c];
    return t < 0 ? -1 : id[t];
  };
  // Classes whose columns are equal once dead targets read -1 become one.
  std::vector<uint64_t> hash(nc, 0xcbf29ce484222325ull);
  for (const int32_t st : kept)
    for (std::size_t c = 0; c < nc; ++c) hash[c] = (hash[c] ^ static_cast<uint32_t>(target(st, c))) * 0x100000001b3ull;
  std::vector<std::size_t> reps, merged(nc);
  for (std::size_t c = 0; c < nc; ++c) {
    std::size_t k = 0;
    for (; k < reps.size(); ++k) {
      if (hash[reps[k]] != hash[c]) continue;
      bool same = true;
      for (std::size_t i = 0; same && i < kept.size(); ++i) same = target(kept[i], c) == target(kept[i], reps[k]);
      if (same) break;
    }
    if (k == reps.size()) reps.push_back(c);
    merged[c] = k;
  }
  Tables out;
  out.n_classes = reps.size();
  for (int b = 0; b < 256; ++b) out.class_of[b] = static_cast<uint8_t>(merged[class_of[b]]);
  out.table.resize(kept.size() * reps.size());
  out.accepting.resize(kept.size());
  for (std::size_t i = 0; i < kept.size(); ++i) {
    out.accepting[i] = accepting[static_cast<std::size_t>(kept[i])];
    for (std::size_t k = 0; k < reps.size(); ++k) out.table[i * reps.size() + k] = target(kept[i], reps[k]);
  }
  return out;
}

Tables build(const Tree& tree) {
  NfaBuilder nfa(tree);
  const int32_t start = nfa.build();
  Subsets dfa(nfa.states, nfa.edges);
  dfa.run(start);
  return dfa.finish();
}

}  // namespace dpa::engine::regex_detail
