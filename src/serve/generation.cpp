// Per-choice text, stop strings, logprobs, and the OpenAI response objects.
#include "serve/generation.h"

#include <algorithm>

#include <fmt/format.h>

#include "serve/held_text.h"

namespace dpa::serve {

namespace json = boost::json;

namespace {
// A single token may hold part of a UTF-8 character; JSON text must be valid UTF-8, so each
// invalid byte becomes U+FFFD (what a client would show anyway).
std::string valid_utf8(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (std::size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && n == 2) ok = c >= 0xc2;
    if (ok && n == 3) {
      const unsigned char d = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xe0 && d < 0xa0) && !(c == 0xed && d >= 0xa0);
    }
    if (ok && n == 4) {
      const unsigned char d = static_cast<unsigned char>(s[i + 1]);
      ok = c <= 0xf4 && !(c == 0xf0 && d < 0x90) && !(c == 0xf4 && d >= 0x90);
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}
}  // namespace

Generation::Generation(const ParsedRequest& req, const text::Tokenizer* tok, std::size_t prompt_index)
    : req_(req), tok_(tok), prompt_index_(prompt_index) {
  if (tok_) detok_ = std::make_unique<text::IncrementalDetokenizer>(*tok_, req.skip_special_tokens);
  if (prompt_index < req.echo_texts.size()) echo_ = valid_utf8(req.echo_texts[prompt_index]);
  if (req.tool_parser != ToolParser::none) tools_ = std::make_unique<ToolCallStream>(req.tool_parser);
  if (req.forced_tools != ForcedTools::none) tools_ = std::make_unique<ToolCallStream>(req.forced_tools, req.forced_tool);
  if (req.reasoning_parser != ReasoningParser::none) reasoning_stream_ = std::make_unique<ReasoningStream>();
}


bool Generation::decodable(int32_t id) const { return tok_ && id >= 0 && id < tok_->vocab_size(); }

std::string Generation::token_text(int32_t id) const {
  if (req_.return_tokens_as_token_ids || !tok_) return fmt::format("token_id:{}", id);
  if (!decodable(id)) return "";  // the model's vocabulary is padded past the tokenizer's
  const int32_t one[1] = {id};
  return valid_utf8(tok_->decode(one, false));
}

std::string Generation::add(const engine::TokenOutput& out) {
  if (finished()) return {};
  if (!got_first_) {
    got_first_ = true;
    if (out.cached_tokens >= 0) cached_tokens_ = out.cached_tokens;
    prompt_scores_ = out.prompt_logprobs;
  }
  if (req_.prompt_only) {  // max_tokens 0: the engine's one token is not part of the answer
    finish_ = engine::FinishReason::length;
    return {};
  }
  tokens_.push_back(out.token);
  logprobs_.push_back(out.logprob);
  tops_.push_back(out.top);
  token_offsets_.push_back(text_.size());
  if (detok_ && decodable(out.token)) text_ += detok_->push(out.token);
  if (out.finish != engine::FinishReason::none) {
    finish_ = out.finish;
    if (detok_) text_ += detok_->finish();
  }
  // Stop strings: search the region that the new text could complete.
  if (!req_.params.stop.empty()) {
    std::size_t longest = 0;
    for (const auto& s : req_.params.stop) longest = std::max(longest, s.size());
    const std::size_t from = emitted_ > longest ? emitted_ - longest : 0;
    std::size_t cut = std::string::npos;
    const std::string* hit = nullptr;
    for (const auto& s : req_.params.stop) {
      const std::size_t at = text_.find(s, from);
      if (at != std::string::npos && at < cut) cut = at, hit = &s;
    }
    if (cut != std::string::npos) {
      matched_stop_ = *hit;
      text_.resize(req_.include_stop_str_in_output ? cut + hit->size() : cut);
      finish_ = engine::FinishReason::stop;
      stopped_by_string_ = out.finish == engine::FinishReason::none;
    }
  }
  return route(flush_text(finished()), finished());
}

std::string Generation::route(std::string text, bool final) {
  if (!reasoning_stream_ && !tools_) return text;
  if (reasoning_stream_) {
    ReasoningStream::Split split = reasoning_stream_->push(text, final);
    reasoning_ += split.reasoning;
    text = std::move(split.content);
  }
  if (tools_) text = tools_->push(text, final);
  content_ += text;
  return text;
}

std::string Generation::flush_text(bool final) {
  std::size_t safe = text_.size();
  if (!final && !req_.params.stop.empty()) {
    // Hold back a tail that is a prefix of some stop string.
    for (const auto& s : req_.params.stop) safe = std::min(safe, text_.size() - held_prefix(text_, s));
  }
  if (safe <= emitted_) return {};
  std::string delta = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return delta;
}

void Generation::end(engine::FinishReason why) {
  if (finished()) return;
  finish_ = why;
  route(flush_text(true), true);  // what the parsers held back, for the response
}

const std::vector<ToolCall>& Generation::tool_calls() const {
  static const std::vector<ToolCall> none;
  return tools_ ? tools_->calls() : none;
}

std::string Generation::take_stream_reasoning() {
  if (!req_.include_reasoning) return {};
  std::string fresh = reasoning_.substr(stream_reasoning_from_);
  stream_reasoning_from_ = reasoning_.size();
  return fresh;
}

int64_t Generation::reasoning_tokens() const {
  if (!reasoning_stream_) return 0;
  static constexpr std::string_view kEnd = "</think>";
  const std::size_t end = text_.find(kEnd);
  if (end == std::string::npos) return static_cast<int64_t>(tokens_.size());
  return std::count_if(token_offsets_.begin(), token_offsets_.end(),
                       [&](std::size_t at) { return at < end + kEnd.size(); });
}

std::vector<ToolCall> Generation::take_stream_tool_calls(std::size_t& first) {
  first = stream_calls_from_;
  const auto& all = tool_calls();
  std::vector<ToolCall> fresh(all.begin() + static_cast<std::ptrdiff_t>(first), all.end());
  stream_calls_from_ = all.size();
  return fresh;
}

std::string Generation::finish_reason() const {
  // As vLLM: a generation that ended by itself after calling tools reports "tool_calls"; one
  // made to call a named function reports "stop", as OpenAI's does.
  if (finish_ == engine::FinishReason::stop && !tool_calls().empty() && req_.forced_tools != ForcedTools::named)
    return "tool_calls";
  return engine_finish_reason();
}

std::string Generation::engine_finish_reason() const {
  switch (finish_) {
    case engine::FinishReason::stop: return "stop";
    case engine::FinishReason::length: return "length";
    case engine::FinishReason::abort: return "abort";
    case engine::FinishReason::none: break;
  }
  return "";
}

std::vector<std::size_t> Generation::prompt_offsets() const {
  const auto& ids = req_.prompts[prompt_index_];
  std::vector<std::size_t> offs;
  offs.reserve(ids.size());
  std::size_t at = 0;
  std::unique_ptr<text::IncrementalDetokenizer> d;
  if (tok_) d = std::make_unique<text::IncrementalDetokenizer>(*tok_, false);
  for (int32_t id : ids) {
    offs.push_back(std::min(at, echo_.size()));
    if (d && decodable(id)) at += d->push(id).size();
  }
  return offs;
}

void Generation::echo_logprobs(json::array& toks, json::array& lps, json::array& tops, json::array* offs) const {
  const auto& ids = req_.prompts[prompt_index_];
  const std::vector<std::size_t> at = offs ? prompt_offsets() : std::vector<std::size_t>{};
  const auto k = static_cast<std::size_t>(std::max(req_.params.logprobs, 0));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    toks.push_back(json::string(token_text(ids[i])));
    const engine::PromptLogprob* e = i > 0 && i - 1 < prompt_scores_.size() ? &prompt_scores_[i - 1] : nullptr;
    lps.push_back(e ? json::value(e->logprob) : json::value(nullptr));
    json::object top;
    if (e)
      for (std::size_t j = 0; j < std::min(k, e->top.size()); ++j) top[token_text(e->top[j].token)] = e->top[j].logprob;
    tops.push_back(e && k > 0 ? json::value(top) : json::value(nullptr));
    if (offs) offs->push_back(static_cast<int64_t>(at[i]));
  }
}

namespace {
// Characters (code points) of valid UTF-8 text before byte offsets that do not decrease, counted
// as they come: text_offset counts characters, as OpenAI's and vLLM's do.
class CharCounter {
 public:
  explicit CharCounter(const std::string& s) : s_(s) {}
  int64_t at(std::size_t byte) {
    for (byte = std::min(byte, s_.size()); pos_ < byte; ++pos_) chars_ += (static_cast<unsigned char>(s_[pos_]) & 0xc0) != 0x80;
    return chars_;
  }

 private:
  const std::string& s_;
  std::size_t pos_ = 0;
  int64_t chars_ = 0;
};
}  // namespace

json::value Generation::completion_logprobs() const {
  if (req_.params.logprobs < 0) return nullptr;
  json::array toks, lps, tops, offs;
  int64_t base = 0;  // the generated text's first character in the choice's text
  if (req_.echo) {   // which starts with the echo
    echo_logprobs(toks, lps, tops, &offs);
    CharCounter echo(echo_);
    for (auto& o : offs) o = echo.at(static_cast<std::size_t>(o.as_int64()));
    base = echo.at(echo_.size());
  }
  CharCounter text(text_);
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    toks.push_back(json::string(token_text(tokens_[i])));
    lps.push_back(logprobs_[i]);
    json::object top;
    for (const auto& t : tops_[i]) top[token_text(t.token)] = t.logprob;
    tops.push_back(req_.params.logprobs > 0 ? json::value(top) : json::value(nullptr));
    offs.push_back(base + text.at(token_offsets_[i]));
  }
  return json::object{{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offs}};
}

json::value Generation::prompt_logprobs() const {
  if (req_.prompt_logprobs < 0 || !got_first_) return nullptr;
  const auto& ids = req_.prompts[prompt_index_];
  const auto k = static_cast<std::size_t>(req_.prompt_logprobs);
  json::array out;
  out.push_back(nullptr);
  for (std::size_t i = 0; i + 1 < ids.size() && i < prompt_scores_.size(); ++i) {
    const engine::PromptLogprob& e = prompt_scores_[i];
    json::object d;
    auto entry = [&](int32_t id, float lp, int64_t rank) {
      const std::string key = std::to_string(id);
      if (!d.contains(key))
        d[key] = json::object{{"logprob", lp}, {"rank", rank}, {"decoded_token", token_text(id)}};
    };
    entry(e.token, e.logprob, e.rank);
    for (std::size_t j = 0; j < std::min(k, e.top.size()); ++j)
      entry(e.top[j].token, e.top[j].logprob, static_cast<int64_t>(j + 1));
    out.push_back(std::move(d));
  }
  return out;
}

namespace {
json::array bytes_of(const std::string& s) {
  json::array b;
  for (unsigned char c : s) b.push_back(static_cast<int64_t>(c));
  return b;
}
}  // namespace

json::value Generation::chat_logprobs() const {
  if (!req_.chat_logprobs) return nullptr;
  json::array content;
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const std::string t = token_text(tokens_[i]);
    json::array top;
    for (const auto& e : tops_[i]) {
      const std::string tt = token_text(e.token);
      top.push_back(json::object{{"token", tt}, {"logprob", e.logprob}, {"bytes", bytes_of(tt)}});
    }
    content.push_back(json::object{{"token", t}, {"logprob", logprobs_[i]}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
  }
  return json::object{{"content", content}};
}

json::value Generation::take_stream_logprobs(bool chat) {
  if (chat ? !req_.chat_logprobs : req_.params.logprobs < 0) return nullptr;
  json::array content, toks, lps, tops;
  if (!chat && req_.echo && !stream_echo_scores_sent_) {  // the chunk that carries the echo
    echo_logprobs(toks, lps, tops, nullptr);
    stream_echo_scores_sent_ = true;
  }
  for (std::size_t i = stream_lp_from_; i < tokens_.size(); ++i) {
    const std::string t = token_text(tokens_[i]);
    if (chat) {
      json::array top;
      for (const auto& e : tops_[i]) top.push_back(json::object{{"token", token_text(e.token)}, {"logprob", e.logprob}});
      content.push_back(json::object{{"token", t}, {"logprob", logprobs_[i]}, {"bytes", bytes_of(t)}, {"top_logprobs", top}});
    } else {
      toks.push_back(json::string(t));
      lps.push_back(logprobs_[i]);
      json::object top;
      for (const auto& e : tops_[i]) top[token_text(e.token)] = e.logprob;
      tops.push_back(top);
    }
  }
  stream_lp_from_ = tokens_.size();
  if (chat) return json::object{{"content", content}};
  return json::object{{"tokens", toks}, {"token_logprobs", lps}, {"top_logprobs", tops}};
}

json::array tool_calls_json(const std::string& response_id, std::size_t choice, const std::vector<ToolCall>& calls,
                            std::size_t first_index, bool stream) {
  // "chatcmpl-<x>" gives "call_<x>_<choice>_<index>": unique while response ids are.
  const auto dash = response_id.find('-');
  const std::string stem = dash == std::string::npos ? response_id : response_id.substr(dash + 1);
  json::array out;
  for (std::size_t k = 0; k < calls.size(); ++k) {
    json::object c{{"id", fmt::format("call_{}_{}_{}", stem, choice, first_index + k)},
                   {"type", "function"},
                   {"function", json::object{{"name", calls[k].name}, {"arguments", calls[k].arguments}}}};
    if (stream) c["index"] = static_cast<int64_t>(first_index + k);
    out.push_back(std::move(c));
  }
  return out;
}

void Generation::native_logprobs(json::object& meta) const {
  if (!req_.native_logprobs) return;
  auto entry = [&](json::value lp, int32_t id) {
    return json::array{std::move(lp), id, req_.native_logprob_text ? json::value(token_text(id)) : json::value(nullptr)};
  };
  auto tops = [&](const std::vector<engine::TokenLogprob>& t) {
    json::array a;
    for (const auto& e : t) a.push_back(entry(e.logprob, e.token));
    return a;
  };
  const bool top = req_.params.logprobs > 0;
  json::array in, in_top, out, out_top;
  const auto& ids = req_.prompts[prompt_index_];
  if (req_.native_logprob_start >= 0 && got_first_)  // entry p of the scores is prompt token p + 1's
    for (std::size_t i = static_cast<std::size_t>(req_.native_logprob_start); i < ids.size(); ++i) {
      const engine::PromptLogprob* e = i > 0 && i - 1 < prompt_scores_.size() ? &prompt_scores_[i - 1] : nullptr;
      in.push_back(entry(e ? json::value(e->logprob) : json::value(nullptr), ids[i]));
      if (top) in_top.push_back(e ? json::value(tops(e->top)) : json::value(nullptr));
    }
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    out.push_back(entry(logprobs_[i], tokens_[i]));
    if (top) out_top.push_back(tops(tops_[i]));
  }
  meta["input_token_logprobs"] = std::move(in);
  meta["output_token_logprobs"] = std::move(out);
  if (top) {
    meta["input_top_logprobs"] = std::move(in_top);
    meta["output_top_logprobs"] = std::move(out_top);
  }
}

json::value native_choice(const Generation& g, const std::string& rid, int64_t prompt_tokens, bool stream) {
  json::object finish;
  const std::string why = g.engine_finish_reason();
  if (why == "length") {
    finish = {{"type", "length"}, {"length", static_cast<int64_t>(g.tokens().size())}};
  } else if (why == "stop") {
    // SGLang's: the stop string, else the token that stopped it (EOS or a stop id).
    finish = {{"type", "stop"}, {"matched", g.matched_stop().empty() ? json::value(g.tokens().empty() ? -1 : g.tokens().back())
                                                                    : json::value(g.matched_stop())}};
  } else if (why == "abort") {
    finish = {{"type", "abort"}};
  }
  json::array ids;
  for (int32_t t : g.tokens()) ids.push_back(t);
  json::object meta{{"id", rid},
                    {"finish_reason", finish.empty() ? json::value(nullptr) : json::value(finish)},
                    {"prompt_tokens", prompt_tokens},
                    {"completion_tokens", static_cast<int64_t>(g.tokens().size())},
                    {"cached_tokens", std::max<int64_t>(g.cached_tokens(), 0)}};
  g.native_logprobs(meta);
  // Streamed, the text so far stops where add() did: a held-back start of a stop string may still
  // be cut, and each chunk's text must begin with the one before.
  std::string text = g.echo();
  text += stream ? g.shown_text() : std::string_view(g.text());
  return json::object{{"text", std::move(text)}, {"output_ids", std::move(ids)}, {"meta_info", std::move(meta)}};
}

json::object usage_object(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  json::object u{{"prompt_tokens", prompt_tokens},
                 {"completion_tokens", completion_tokens},
                 {"total_tokens", prompt_tokens + completion_tokens}};
  if (cached_tokens >= 0) u["prompt_tokens_details"] = json::object{{"cached_tokens", cached_tokens}};
  return u;
}

int64_t cached_prompt_tokens(const std::vector<Generation>& choices) {
  // prompt_tokens counts each prompt once (not once per choice of n): so do the cached tokens,
  // taking the first choice of each prompt that reported a count.
  std::vector<std::size_t> seen;
  int64_t total = -1;
  for (const auto& g : choices) {
    if (g.cached_tokens() < 0 || std::find(seen.begin(), seen.end(), g.prompt_index()) != seen.end()) continue;
    seen.push_back(g.prompt_index());
    total = std::max<int64_t>(total, 0) + g.cached_tokens();
  }
  return total;
}

json::object completion_response(const std::string& id, const std::string& model, int64_t created,
                                 const std::vector<Generation>& choices, int64_t prompt_tokens) {
  json::array cs;
  int64_t completion_tokens = 0;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const auto& g = choices[i];
    completion_tokens += static_cast<int64_t>(g.tokens().size());
    cs.push_back(json::object{{"index", static_cast<int64_t>(i)},
                              {"text", g.echo() + g.text()},
                              {"logprobs", g.completion_logprobs()},
                              {"finish_reason", g.finish_reason()}});
    if (g.asked_prompt_logprobs()) cs.back().as_object()["prompt_logprobs"] = g.prompt_logprobs();
  }
  return json::object{{"id", id},         {"object", "text_completion"}, {"created", created},
                      {"model", model},   {"choices", cs},
                      {"usage", usage_object(prompt_tokens, completion_tokens, cached_prompt_tokens(choices))}};
}

json::object chat_response(const std::string& id, const std::string& model, int64_t created,
                           const std::vector<Generation>& choices, int64_t prompt_tokens) {
  json::array cs;
  int64_t completion_tokens = 0;
  for (std::size_t i = 0; i < choices.size(); ++i) {
    const auto& g = choices[i];
    completion_tokens += static_cast<int64_t>(g.tokens().size());
    json::object message{{"role", "assistant"}, {"content", g.content()}};
    if (g.splits_reasoning()) {  // vLLM's shape: null for a part that is empty
      if (g.content().empty()) message["content"] = nullptr;
      if (g.include_reasoning())
        message["reasoning_content"] = g.reasoning().empty() ? json::value(nullptr) : json::value(g.reasoning());
    }
    if (!g.tool_calls().empty()) {
      // OpenAI's shape: content null when the model only called tools.
      if (g.content().find_first_not_of(" \t\r\n") == std::string::npos) message["content"] = nullptr;
      message["tool_calls"] = tool_calls_json(id, i, g.tool_calls(), 0, false);
    }
    cs.push_back(json::object{{"index", static_cast<int64_t>(i)},
                              {"message", std::move(message)},
                              {"logprobs", g.chat_logprobs()},
                              {"finish_reason", g.finish_reason()}});
  }
  json::object r{{"id", id},       {"object", "chat.completion"}, {"created", created},
                 {"model", model}, {"choices", cs},
                 {"usage", usage_object(prompt_tokens, completion_tokens, cached_prompt_tokens(choices))}};
  // vLLM's: one prompt, so at the response's level.
  if (!choices.empty() && choices[0].asked_prompt_logprobs()) r["prompt_logprobs"] = choices[0].prompt_logprobs();
  return r;
}

}  // namespace dpa::serve
