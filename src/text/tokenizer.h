// Byte-level BPE tokenizer for Hugging Face `tokenizer.json` files (DeepSeek-V2/V3, GPT-2 style,
// Qwen, Llama 3): normalizer-free byte-level models whose pre-tokenizer is a `Sequence` of `Split`
// regexes plus `ByteLevel`, or a plain `ByteLevel` with its GPT-2 regex; added and special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dpa::text {

class Tokenizer {
 public:
  // Throws dpa::Error naming the file and the problem.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  static std::unique_ptr<Tokenizer> from_json(const std::string& json_text, const std::string& source);
  virtual ~Tokenizer() = default;

  // Special/added tokens in `text` are matched as tokens; the rest goes through BPE.
  // `add_special_tokens` prepends the post-processor's BOS when the tokenizer defines one.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const = 0;
  // Bytes of the tokens; invalid UTF-8 is kept as the bytes are (callers stream through
  // IncrementalDetokenizer to avoid half characters).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const = 0;
  virtual int64_t vocab_size() const = 0;  // highest id + 1, added tokens included
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // The ids `add_special_tokens` puts before and after the text, in place of the post-processor's
  // (what transformers' LlamaTokenizerFast builds from tokenizer_config.json's add_bos_token and
  // add_eos_token).
  virtual void set_special_affixes(std::vector<int32_t> before, std::vector<int32_t> after) = 0;
};

// Streams text out of a growing list of ids without ever emitting half a UTF-8 character.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens = true);
  // Adds one id; returns the newly complete text (possibly empty).
  std::string push(int32_t id);
  // Whatever is left at the end (incomplete bytes are emitted as U+FFFD).
  std::string finish();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;  // bytes not yet emitted
};

}  // namespace dpa::text
