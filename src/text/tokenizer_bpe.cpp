// GPT-2 byte-level alphabet and the BPE merge model (rank-ordered merges over token ids).
#include <algorithm>
#include <limits>

#include "core/error.h"
#include "text/tokenizer_parts.h"

namespace dpa::text::detail {

namespace {

// The GPT-2 table: bytes that are printable Latin-1 keep their code point; the other 68 bytes
// get U+0100.. in byte order. Built once.
struct ByteAlphabet {
  std::array<char32_t, 256> to_cp{};
  std::unordered_map<char32_t, uint8_t> from_cp;
  ByteAlphabet() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? char32_t(b) : char32_t(256 + next++);
      from_cp.emplace(to_cp[b], uint8_t(b));
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet table;
  return table;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Words longer than this are not cached: they rarely repeat and would bloat the cache.
constexpr size_t kMaxCachedWord = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

}  // namespace

char32_t byte_to_code_point(uint8_t b) { return alphabet().to_cp[b]; }

void byte_level_spell(std::string_view bytes, std::string& out) {
  const auto& table = alphabet().to_cp;
  for (unsigned char c : bytes) append_utf8(table[c], out);
}

bool byte_level_unspell(std::string_view token, std::string& out) {
  const auto& from = alphabet().from_cp;
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    int len = 0;
    char32_t cp = utf8_decode_at(token, i, &len);
    auto it = from.find(cp);
    if (it == from.end()) return false;
    bytes += char(it->second);
    i += size_t(len);
  }
  out += bytes;
  return true;
}

BpeModel::BpeModel(const std::unordered_map<std::string, int32_t>& vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& source)
    : vocab_(&vocab), options_(options) {
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    append_utf8(byte_to_code_point(uint8_t(b)), spelled);
    auto it = vocab.find(spelled);
    byte_ids_[size_t(b)] = it == vocab.end() ? -1 : it->second;
  }
  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& a = merges[rank].first;  // not a structured binding: clang 14 cannot capture one
    const std::string& b = merges[rank].second;
    auto find = [&](const std::string& tok, const char* role) {
      auto it = vocab.find(tok);
      if (it == vocab.end()) {
        throw Error(source + ": merge #" + std::to_string(rank) + " (\"" + a + "\" + \"" + b +
                    "\"): " + role + " token \"" + tok + "\" is not in the vocab");
      }
      return it->second;
    };
    int32_t left = find(a, "left");
    int32_t right = find(b, "right");
    int32_t merged = find(a + b, "merged");
    // A repeated pair keeps its last rank, as both Hugging Face and transformers.js do.
    merges_[pair_key(left, right)] = Merge{int32_t(rank), merged};
  }
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>& out) const {
  if (bytes.empty()) return;
  const bool cacheable = bytes.size() <= kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(bytes));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  bool done = false;
  if (options_.ignore_merges) {
    std::string spelled;
    byte_level_spell(bytes, spelled);
    auto it = vocab_->find(spelled);
    if (it != vocab_->end()) {
      out.push_back(it->second);
      done = true;
    }
  }
  if (!done) merge_symbols(bytes, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(bytes), std::vector<int32_t>(out.begin() + long(first), out.end()));
  }
}

// Standard BPE: repeatedly apply the lowest-rank merge among adjacent symbols (leftmost first on
// ties). A min-heap of candidate pairs keeps long words (whitespace runs, base64) near n log n;
// stale heap entries are recognised by re-checking the pair at pop time.
void BpeModel::merge_symbols(std::string_view bytes, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol (its first byte): ties go to the leftmost pair
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
  };
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Candidate> heap;
  syms.clear();
  heap.clear();
  const int32_t n = int32_t(bytes.size());
  for (int32_t i = 0; i < n; ++i) {
    int32_t id = byte_ids_[uint8_t(bytes[size_t(i)])];
    if (id < 0) {
      if (options_.unk_id < 0) {
        static const char* hex = "0123456789ABCDEF";
        const uint8_t b = uint8_t(bytes[size_t(i)]);
        throw Error(std::string("tokenizer: byte 0x") + hex[b >> 4] + hex[b & 15] +
                    " has no token in the vocab and the model has no unk_token");
      }
      id = options_.unk_id;
    }
    syms.push_back(Symbol{id, i - 1, i + 1 < n ? i + 1 : -1, true});
  }
  auto later = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto consider = [&](int32_t pos) {
    int32_t next = syms[size_t(pos)].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(syms[size_t(pos)].id, syms[size_t(next)].id));
    if (it == merges_.end()) return;
    heap.push_back(Candidate{it->second.rank, pos, syms[size_t(pos)].id, syms[size_t(next)].id,
                             it->second.merged_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = syms[size_t(c.pos)];
    if (!left.alive || left.id != c.left_id || left.next < 0) continue;
    Symbol& right = syms[size_t(left.next)];
    if (right.id != c.right_id) continue;
    left.id = c.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[size_t(right.next)].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = syms[size_t(i)].next) out.push_back(syms[size_t(i)].id);
}

}  // namespace dpa::text::detail
