// DeepSeek-R1's <think> block split from streamed text.
#include "serve/reasoning.h"

#include "serve/held_text.h"

namespace dpa::serve {

namespace {
constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

}  // namespace

std::optional<ReasoningParser> reasoning_parser_from_name(std::string_view name) {
  if (name == "none") return ReasoningParser::none;
  if (name == "deepseek_r1" || name == "deepseek-r1") return ReasoningParser::deepseek_r1;
  if (name == "deepseek_v3" || name == "deepseek-v3") return ReasoningParser::deepseek_v3;
  return std::nullopt;
}

ReasoningStream::Split ReasoningStream::push(std::string_view text, bool final) {
  buf_.append(text);
  Split out;
  if (state_ == State::start) {
    // An opening <think> at the very start (when the template did not write it) is dropped.
    if (!final && buf_.size() < kOpen.size() && kOpen.substr(0, buf_.size()) == buf_) return out;
    if (buf_.compare(0, kOpen.size(), kOpen) == 0) buf_.erase(0, kOpen.size());
    state_ = State::reasoning;
  }
  if (state_ == State::reasoning) {
    const auto at = buf_.find(kClose);
    if (at == std::string::npos) {
      const std::size_t keep = final ? 0 : held_prefix(buf_, kClose);
      out.reasoning.assign(buf_, 0, buf_.size() - keep);
      buf_.erase(0, buf_.size() - keep);
      return out;
    }
    out.reasoning.assign(buf_, 0, at);
    buf_.erase(0, at + kClose.size());
    state_ = State::content;
  }
  out.content += buf_;
  buf_.clear();
  return out;
}

}  // namespace dpa::serve
