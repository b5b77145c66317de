// IncrementalDetokenizer: streams decoded bytes out only at UTF-8 character boundaries.
#include <span>

#include "text/tokenizer.h"
#include "text/tokenizer_parts.h"

namespace dpa::text {

namespace {

constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of a lead byte's sequence, 0 when the byte cannot start a character.
int lead_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether bytes[1..n) may follow `lead` in a valid sequence (rules out overlongs, surrogates and
// code points above U+10FFFF already at the second byte, so a doomed prefix is not held back).
bool valid_continuation(const unsigned char* p, size_t n) {
  for (size_t k = 1; k < n; ++k)
    if ((p[k] & 0xC0) != 0x80) return false;
  if (n >= 2) {
    if (p[0] == 0xE0 && p[1] < 0xA0) return false;
    if (p[0] == 0xED && p[1] > 0x9F) return false;
    if (p[0] == 0xF0 && p[1] < 0x90) return false;
    if (p[0] == 0xF4 && p[1] > 0x8F) return false;
  }
  return true;
}

// Moves every complete character of `pending` to the result; invalid bytes become U+FFFD so
// the output is always valid UTF-8. A valid but incomplete tail stays in `pending` unless
// `flush`, in which case it too becomes U+FFFD.
std::string drain(std::string& pending, bool flush) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(pending.data());
  const size_t n = pending.size();
  size_t i = 0;
  while (i < n) {
    int len = lead_len(p[i]);
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    size_t have = std::min(size_t(len), n - i);
    if (!valid_continuation(p + i, have)) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (have < size_t(len)) {
      if (!flush) break;
      out += kReplacement;
      i = n;
      break;
    }
    out.append(pending, i, size_t(len));
    i += size_t(len);
  }
  pending.erase(0, i);
  return out;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  pending_ += tok_.decode(std::span<const int32_t>(&id, 1), skip_special_);
  return drain(pending_, false);
}

std::string IncrementalDetokenizer::finish() { return drain(pending_, true); }

}  // namespace dpa::text
