// fuzz_tokenizer: the small GPT-2 byte-level BPE tokenizer (tests/text/corpus) on arbitrary
// bytes: encode (with and without special tokens), decode arbitrary id lists (ids outside the
// vocabulary included), the incremental detokenizer, and id_to_token / token_to_id.
// The first byte picks the mode; the rest is the payload. Its top bit: the payload is a
// tokenizer.json of its own (a checkpoint directory's, so untrusted): loaded (dpa::Error is the
// documented refusal), then used to encode and decode a fixed text.
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_common.h"
#include "text/tokenizer.h"

namespace {
using namespace dpa;
constexpr int32_t kFirstAdded = 291;

const text::Tokenizer& tok() {
  static std::unique_ptr<text::Tokenizer> t =
      text::Tokenizer::from_file(fuzz::source_path("tests/text/corpus/tokenizer_gpt2_mini.json"));
  return *t;
}

std::vector<int32_t> ids_from(const uint8_t* data, size_t size, bool in_vocab) {
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  if (in_vocab) {
    const int64_t v = tok().vocab_size();
    for (auto& i : ids) i = static_cast<int32_t>(static_cast<uint32_t>(i) % static_cast<uint64_t>(v));
  }
  return ids;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 14)) return 0;
  const auto& t = tok();
  const uint8_t mode = data[0];
  ++data, --size;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (mode & 0x80) {
    fuzz::expect_clean([&] {
      const auto own = text::Tokenizer::from_json(std::string(text), "fuzz tokenizer.json");
      const std::vector<int32_t> ids = own->encode("Hello, world! <s> 123 \xe4\xbd\xa0\xe5\xa5\xbd\n", mode & 1);
      for (int32_t i : ids)
        if (i < 0 || i >= own->vocab_size()) __builtin_trap();
      (void)own->decode(ids, mode & 2);
      text::IncrementalDetokenizer d(*own, mode & 4);
      for (int32_t i : ids) (void)d.push(i);
      (void)d.finish();
    });
    return 0;
  }
  switch (mode % 4) {
    case 0:
    case 1: {  // encode (dpa::Error on invalid UTF-8, documented), then decode what came out
      std::vector<int32_t> ids;
      try {
        ids = t.encode(text, mode & 1);
      } catch (const std::exception&) {
        break;
      }
      for (int32_t i : ids)
        if (i < 0 || i >= t.vocab_size()) __builtin_trap();
      const std::string back = t.decode(ids, false);
      // Byte-level BPE is lossless unless an added token matched (<rs> strips the whitespace
      // after it, as in HF); the mini tokenizer's added tokens are ids 291..293.
      bool added = false;
      for (int32_t i : ids) added |= i >= kFirstAdded;
      if (!(mode & 1) && !added && back != text) __builtin_trap();
      (void)t.decode(ids, true);
      break;
    }
    case 2: {  // decode arbitrary ids: out-of-range ids may be refused with an exception
      const auto ids = ids_from(data, size, false);
      fuzz::expect_clean([&] { (void)t.decode(ids, mode & 4); });
      for (int32_t i : ids) {
        (void)t.id_to_token(i);
        (void)t.is_special(i);
      }
      (void)t.token_to_id(text);
      break;
    }
    case 3: {  // the incremental detokenizer over in-vocab ids equals decode
      const auto ids = ids_from(data, size, true);
      text::IncrementalDetokenizer d(t, mode & 4);
      std::string out;
      for (int32_t i : ids) out += d.push(i);
      out += d.finish();
      (void)out;
      break;
    }
  }
  return 0;
}
