// Internal building blocks of the byte-level BPE tokenizer: GPT-2 byte alphabet, PCRE2 regex
// wrapper, pre-tokenizer steps, BPE merge model and added-token matcher. Not a public interface.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dpa::text::detail {

// ---- GPT-2 byte-to-unicode alphabet ----------------------------------------------------------

// The code point that stands for byte `b` in byte-level vocabularies (printable bytes map to
// themselves, the others to U+0100 and up), so every token is printable text.
char32_t byte_to_code_point(uint8_t b);
// Appends the byte-level spelling (UTF-8) of raw `bytes` to `out`.
void byte_level_spell(std::string_view bytes, std::string& out);
// Maps a byte-level token back to raw bytes; false when some character is outside the alphabet
// (then the caller keeps the token's own UTF-8, as Hugging Face's ByteLevel decoder does).
bool byte_level_unspell(std::string_view token, std::string& out);

// ---- UTF-8 helpers ---------------------------------------------------------------------------

// Byte offset of the first invalid UTF-8 sequence, or npos when `s` is valid.
size_t find_invalid_utf8(std::string_view s);
// Length of the UTF-8 character starting with lead byte `c` (1 for invalid leads).
int utf8_char_len(unsigned char c);
// Decodes the character at `s[i]` (valid UTF-8 assumed) and its length.
char32_t utf8_decode_at(std::string_view s, size_t i, int* len);
// Unicode White_Space property (what lstrip/rstrip of added tokens remove).
bool is_unicode_space(char32_t c);

// ---- Regex ----------------------------------------------------------------------------------

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Thread-safe for matching.
class Regex {
 public:
  // `literal` compiles `pattern` as a plain string (Split with a "String" pattern).
  Regex(const std::string& pattern, bool literal, const std::string& source);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends [begin, end) of every non-empty, non-overlapping match in `text` (valid UTF-8).
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  std::string pattern_;
};

// ---- Pre-tokenizer --------------------------------------------------------------------------

// How a Split step treats the matches (Hugging Face SplitDelimiterBehavior).
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct PreTokStep {
  enum class Kind { split, byte_level } kind = Kind::split;
  std::unique_ptr<Regex> regex;  // split: the pattern; byte_level: the GPT-2 regex when use_regex
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  bool add_prefix_space = false;  // byte_level only
};

// Pieces of text between pre-tokenizer steps: views into the input or into `storage` (pieces
// that gained a prefix space).
struct Pieces {
  std::vector<std::string_view> items;
  std::deque<std::string> storage;
};

// Runs the steps in order over every piece; the result is the list of words for BPE.
void run_pre_tokenizer(const std::vector<PreTokStep>& steps, std::string_view text, Pieces& pieces);

// ---- BPE model -------------------------------------------------------------------------------

struct BpeOptions {
  bool ignore_merges = false;  // a word found whole in the vocab is one token (Llama 3)
  int32_t unk_id = -1;         // -1: no unk token; a byte without a token is then an error
};

class BpeModel {
 public:
  // `vocab` maps byte-level token spellings to ids; `merges` are spelled pairs in rank order.
  // Throws dpa::Error (naming `source`) when a merge or its result is not in the vocab.
  BpeModel(const std::unordered_map<std::string, int32_t>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::string& source);
  // Appends the ids of one pre-tokenized word given as raw bytes.
  void encode_word(std::string_view bytes, std::vector<int32_t>& out) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  void merge_symbols(std::string_view bytes, std::vector<int32_t>& out) const;
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }

  const std::unordered_map<std::string, int32_t>* vocab_;  // owned by the tokenizer
  std::array<int32_t, 256> byte_ids_{};                      // id of each single-byte token, -1 none
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  // Per-word cache: most words repeat, and BPE of a word is pure. Cleared when it grows too big.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// ---- Added tokens ---------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// A span of the input: plain text (token_idx < 0) or one added token.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  int32_t token_idx = -1;
};

// Finds added tokens in text, leftmost-longest like Hugging Face's Aho-Corasick matcher:
// non-normalized tokens first over the whole text, then normalized ones in the gaps.
class AddedTokenMatcher {
 public:
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);
  std::vector<Segment> split(std::string_view text) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token_idx = -1;
  };
  struct Trie {
    std::vector<Node> nodes{1};
    void insert(std::string_view s, int32_t idx);
    // Longest token starting at `pos`; returns its index or -1, length in *len.
    int32_t longest_at(std::string_view text, size_t pos, size_t* len) const;
  };
  void split_range(const Trie& trie, std::string_view text, size_t begin, size_t end,
                   std::vector<Segment>& out) const;

  const std::vector<AddedToken>* tokens_;
  Trie raw_;         // normalized == false
  Trie normalized_;  // normalized == true
};

}  // namespace dpa::text::detail
