// DeepSeek tool-call markup read from streamed text.
#include "serve/tool_calls.h"

#include <boost/json.hpp>

#include "serve/held_text.h"

namespace dpa::serve {

namespace {

constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";
constexpr std::string_view kAnyCallMarker = "<｜tool▁call";  // the common start of kCallBegin and kCallsEnd
constexpr std::string_view kSpace = " \t\r\n";

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}


bool is_proper_prefix(std::string_view s, std::string_view marker) {
  return s.size() < marker.size() && marker.substr(0, s.size()) == s;
}


// One call's body (between call-begin and call-end) in either DeepSeek form; nullopt when it does
// not read as one.
std::optional<ToolCall> parse_deepseek_call(std::string_view body) {
  const auto sep = body.find(kSep);
  if (sep == std::string_view::npos) return std::nullopt;
  const std::string_view left = trim(body.substr(0, sep));
  std::string_view right = body.substr(sep + kSep.size());
  ToolCall c;
  const auto fence = right.find("```");
  if (left == "function" && fence != std::string_view::npos) {
    // V3: the type, then the name on its own line and the arguments in a ```json fence.
    c.name = std::string(trim(right.substr(0, std::min(right.find('\n'), fence))));
    std::string_view args = right.substr(fence + 3);
    if (args.substr(0, 4) == "json") args.remove_prefix(4);
    if (const auto close = args.rfind("```"); close != std::string_view::npos) args = args.substr(0, close);
    c.arguments = std::string(trim(args));
  } else {
    // V3.1: the name, then the arguments as they are.
    c.name = std::string(left);
    c.arguments = std::string(trim(right));
  }
  if (c.name.empty() || c.name.find_first_of(kSpace) != std::string::npos) return std::nullopt;
  if (c.arguments.empty()) c.arguments = "{}";
  return c;
}
}  // namespace

std::optional<ToolParser> tool_parser_from_name(std::string_view name) {
  if (name == "none") return ToolParser::none;
  if (name == "deepseek_v3" || name == "deepseek_v31" || name == "deepseekv3" || name == "deepseekv31")
    return ToolParser::deepseek;
  return std::nullopt;
}

std::string_view tool_calls_begin_marker() { return kCallsBegin; }


std::string ToolCallStream::push_forced(std::string_view text, bool final) {
  buf_.append(text);
  if (!final) return {};
  std::string all;
  all.swap(buf_);
  if (forced_ == ForcedTools::named) {
    if (all.find_first_not_of(" \t\r\n") == std::string::npos) return all;
    calls_.push_back({name_, std::move(all)});
    return {};
  }
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(all, ec);
  std::vector<ToolCall> calls;
  if (!ec && v.is_array())
    for (const auto& e : v.as_array()) {
      const auto* o = e.if_object();
      const auto* name = o ? o->if_contains("name") : nullptr;
      const auto* args = o ? o->if_contains("parameters") : nullptr;
      if (!name || !name->is_string() || !args) return all;
      calls.push_back({std::string(name->as_string()), boost::json::serialize(*args)});
    }
  if (calls.empty()) return all;
  calls_ = std::move(calls);
  return {};
}

std::string ToolCallStream::push(std::string_view text, bool final) {
  if (forced_ != ForcedTools::none) return push_forced(text, final);
  buf_.append(text);
  std::string out;
  if (parser_ == ToolParser::none) {
    out.swap(buf_);
    return out;
  }
  if (state_ == State::content) {
    const auto at = buf_.find(kCallsBegin);
    if (at == std::string::npos) {
      const std::size_t keep = final ? 0 : held_prefix(buf_, kCallsBegin);
      out.assign(buf_, 0, buf_.size() - keep);
      buf_.erase(0, buf_.size() - keep);
      return out;
    }
    out.assign(buf_, 0, at);
    buf_.erase(0, at + kCallsBegin.size());
    state_ = State::section;
  }
  if (state_ == State::section) out += read_section(final);
  if (state_ == State::after) {
    out += buf_;
    buf_.clear();
  }
  return out;
}

std::string ToolCallStream::read_section(bool final) {
  std::string out;
  // Until a call has been read, the section may still turn out to be no tool calls at all: keep
  // its raw text, and give it back whole (markers included) if it ends without one.
  auto consume = [&](std::size_t n, std::size_t content_from) {
    if (calls_.empty()) {
      raw_.append(buf_, 0, n);
      held_.append(buf_, content_from, n - content_from);
    } else {
      out.append(buf_, content_from, n - content_from);
    }
    buf_.erase(0, n);
  };
  auto unread_section = [&] {
    out += kCallsBegin;
    out += raw_;
    raw_.clear();
    held_.clear();
  };
  for (;;) {
    const auto ws = buf_.find_first_not_of(kSpace);
    if (ws == std::string::npos) {  // whitespace between calls is not content
      if (!final) return out;
      consume(buf_.size(), buf_.size());
      if (calls_.empty()) unread_section();
      return out;
    }
    const std::string_view rest = std::string_view(buf_).substr(ws);
    if (rest.substr(0, kCallsEnd.size()) == kCallsEnd) {
      consume(ws + kCallsEnd.size(), ws + kCallsEnd.size());
      if (calls_.empty()) unread_section();
      state_ = State::after;
      return out;
    }
    if (rest.substr(0, kCallBegin.size()) == kCallBegin) {
      const auto end = buf_.find(kCallEnd, ws + kCallBegin.size());
      if (end == std::string::npos) {
        if (final) {  // cut short (max_tokens, a stop string): the partial call stays as written
          consume(buf_.size(), ws);
          if (calls_.empty()) unread_section();
        }
        return out;
      }
      const std::size_t body = ws + kCallBegin.size(), next = end + kCallEnd.size();
      if (auto call = parse_deepseek_call(std::string_view(buf_).substr(body, end - body))) {
        consume(next, next);
        if (calls_.empty()) {  // the section is tool calls: what it held is content
          out += held_;
          raw_.clear();
          held_.clear();
        }
        calls_.push_back(std::move(*call));
      } else {
        consume(next, ws);  // unreadable: shown as written
      }
      continue;
    }
    if (!final && (is_proper_prefix(rest, kCallBegin) || is_proper_prefix(rest, kCallsEnd))) return out;
    // Other text between calls (a stray marker included): content, up to the next marker after it.
    auto next = buf_.find(kAnyCallMarker, ws + 1);
    if (next == std::string::npos) next = buf_.size() - (final ? 0 : held_prefix(buf_, kAnyCallMarker));
    if (next <= ws) return out;  // (cannot happen: such a tail was caught as a marker's start above)
    consume(next, 0);
  }
}

}  // namespace dpa::serve
