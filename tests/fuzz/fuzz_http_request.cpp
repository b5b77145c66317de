// fuzz_http_request: the request path of the HTTP server on hostile bytes.
//  1. The bytes as a raw HTTP/1.1 request through Beast's request_parser with the server's limits
//     (header 64 KiB, body --max-request-bytes default 32 MiB), as HttpSession reads it; its
//     target's query decoded and served as a page of a stored response's input items.
//  2. The bytes as a JSON body: boost::json::parse as the server does, then
//     serve::parse_request for both endpoints (completions and chat), the Responses translation
//     (answered, shaped, stored) and SGLang's /generate body, with a ModelInfo built from
//     the small GPT-2 tokenizer and the Qwen2.5 chat template. ApiError is the documented outcome;
//     an accepted request's first choice is answered once (answer_once) and its logprobs checked.
//  3. The bytes as model output through the tool-call reader and the reasoning split (see
//     tool_call_text).
//  4. The bytes as a JSON text through the structured-output recognizer, against Boost.JSON
//     (json_structure).
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <memory>

#include "fuzz_common.h"
#include "fuzz_model_info.h"
#include "engine/structured_output.h"
#include "serve/generation.h"
#include "serve/http_server.h"
#include "serve/openai_request.h"
#include "serve/reasoning.h"
#include "serve/response_store.h"
#include "serve/responses.h"
#include "serve/tool_calls.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

namespace http = boost::beast::http;
using namespace dpa;

// A target's query string decoded as the server does, then served as a page of
// GET /v1/responses/{id}/input_items over three stored items: ApiError (400) is the documented
// outcome of a bad value; a page holds at most `limit` items, each one of the three.
void query_page(const std::string& target) {
  const auto query = serve::query_params(target);
  if (!query) return;
  static const boost::json::array items = {
      boost::json::object{{"id", "msg_a"}, {"type", "message"}, {"role", "user"}},
      boost::json::object{{"id", "msg_b"}, {"type", "message"}, {"role", "assistant"}},
      boost::json::object{{"id", "fc_c"}, {"type", "function_call_output"}, {"call_id", "c"}}};
  try {
    const boost::json::object page = serve::input_items_page(items, *query);
    const boost::json::array& data = page.at("data").as_array();
    if (data.size() > items.size()) __builtin_trap();
    for (const auto& d : data)
      if (std::find(items.begin(), items.end(), d) == items.end()) __builtin_trap();
  } catch (const serve::ApiError&) {
  }
}

void http_parse(const uint8_t* data, size_t size) {
  http::request_parser<http::string_body> p;
  p.body_limit(32ull << 20);
  p.header_limit(64 * 1024);
  p.eager(true);
  boost::beast::error_code ec;
  std::size_t off = 0;
  // Two passes of put(): the whole buffer, then what is left (as a socket read would feed it).
  for (int i = 0; i < 4 && off < size && !p.is_done(); ++i) {
    const std::size_t n = p.put(boost::asio::buffer(data + off, size - off), ec);
    if (ec == http::error::need_more) break;
    if (ec) return;
    if (n == 0) break;
    off += n;
  }
  if (!p.is_done()) {
    p.put_eof(ec);
    if (ec || !p.is_done()) return;
  }
  auto msg = p.release();
  std::string target(msg.target());
  (void)target.substr(0, target.find('?'));
  query_page(target);
  for (const auto& f : msg) {
    (void)std::string(f.name_string());
    (void)std::string(f.value());
  }
  (void)msg.keep_alive();
}

// The first prompt's choice answered with one token (the prompt's first id) and the engine's
// scores of the prompt: the logprobs line up with the prompt and the shown tokens.
void answer_once(const serve::ParsedRequest& r) {
  const auto& prompt = r.prompts[0];
  std::vector<serve::Generation> gs;
  gs.emplace_back(r, fuzz::model_fixture().info.tokenizer, 0);
  serve::Generation& g = gs[0];
  engine::TokenOutput o;
  o.token = prompt[0];
  o.finish = engine::FinishReason::length;
  o.cached_tokens = 0;
  if (r.params.prompt_logprobs >= 0)
    for (std::size_t i = 1; i < prompt.size(); ++i) {
      engine::PromptLogprob e{prompt[i], -1.0f, static_cast<int32_t>(i), {}};
      for (int32_t k = 0; k < r.params.prompt_logprobs; ++k) e.top.push_back({prompt[(i + k) % prompt.size()], -0.5f});
      o.prompt_logprobs.push_back(std::move(e));
    }
  (void)g.add(o);
  const std::size_t shown = r.prompt_only ? 0 : 1;
  if (g.tokens().size() != shown || !g.finished()) __builtin_trap();
  const boost::json::value lp = g.completion_logprobs();
  if (r.endpoint == serve::Endpoint::completions && r.params.logprobs >= 0) {
    const std::size_t want = (r.echo ? prompt.size() : 0) + shown;
    const auto& o2 = lp.as_object();
    for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
      if (o2.at(k).as_array().size() != want) __builtin_trap();
    int64_t last = 0;
    for (const auto& x : o2.at("text_offset").as_array()) {  // offsets in characters, not decreasing
      if (x.as_int64() < last) __builtin_trap();
      last = x.as_int64();
    }
  }
  const boost::json::value pl = g.prompt_logprobs();
  if (r.prompt_logprobs >= 0 && pl.as_array().size() != prompt.size()) __builtin_trap();
  if (r.native) {  // SGLang's shape: its logprob lists line up with the output and the prompt's tail
    const auto meta = serve::native_choice(g, "rid", static_cast<int64_t>(prompt.size()), false).as_object().at("meta_info").as_object();
    if (r.native_logprobs) {
      const std::size_t start = r.native_logprob_start < 0 ? prompt.size() : static_cast<std::size_t>(r.native_logprob_start);
      if (meta.at("output_token_logprobs").as_array().size() != shown ||
          meta.at("input_token_logprobs").as_array().size() != (start < prompt.size() ? prompt.size() - start : 0))
        __builtin_trap();
    } else if (meta.contains("output_token_logprobs")) {
      __builtin_trap();
    }
  }
  (void)boost::json::serialize(r.endpoint == serve::Endpoint::chat
                                   ? serve::chat_response("chatcmpl-x", "m", 0, gs, static_cast<int64_t>(prompt.size()))
                                   : serve::completion_response("cmpl-x", "m", 0, gs, static_cast<int64_t>(prompt.size())));
}

// A Responses request's first choice answered with one token, as a response object and as its
// stream events; stored, then found under its id (the store's newest entry is always kept).
void respond_once(serve::ResponsesRequest rr, const serve::ParsedRequest& r, serve::ResponseStore& store) {
  serve::Generation g(r, fuzz::model_fixture().info.tokenizer, 0);
  engine::TokenOutput o;
  o.token = r.prompts[0][0];
  o.finish = engine::FinishReason::length;
  o.cached_tokens = 0;
  const std::string delta = g.add(o);
  const int64_t n = static_cast<int64_t>(r.prompts[0].size());
  serve::ResponseShaper shaper(std::move(rr), serve::new_response_id(), "m", 0);
  std::string events = shaper.start_events() + shaper.piece_events("", delta, {}) + shaper.finish_events(g, n);
  if (events.find("event: response.created") != 0) __builtin_trap();
  const boost::json::object response = shaper.response(g, n);
  if (response.at("id").as_string() != shaper.id()) __builtin_trap();
  store.put(shaper.id(), response, shaper.conversation(g), shaper.input_items());
  const serve::ResponseStore::Entry* e = store.find(shaper.id());
  if (!e) __builtin_trap();
  // Its input items, the first page newest first and the whole list oldest first.
  const boost::json::object page = serve::input_items_page(e->input_items, {});
  if (page.at("data").as_array().size() > std::min<std::size_t>(20, e->input_items.size())) __builtin_trap();
  const boost::json::object all = serve::input_items_page(e->input_items, {{"order", "asc"}, {"limit", "100"}});
  if (e->input_items.size() <= 100 && all.at("data").as_array() != e->input_items) __builtin_trap();
}

void json_request(const uint8_t* data, size_t size) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), ec);
  if (ec || !v.is_object()) return;  // the server answers 400 before parse_request
  const auto& f = fuzz::model_fixture();
  for (auto ep : {serve::Endpoint::completions, serve::Endpoint::chat}) {
    try {
      serve::ParsedRequest r = serve::parse_request(v, ep, f.info);
      // What the server relies on afterwards.
      if (r.prompts.empty()) __builtin_trap();
      for (const auto& p : r.prompts) {
        if (p.empty() || static_cast<int64_t>(p.size()) > f.info.max_model_len) __builtin_trap();
        for (int32_t t : p)
          if (t < 0 || t >= f.info.vocab_size) __builtin_trap();
      }
      if (r.n < 1 || r.n > f.info.max_n) __builtin_trap();
      (void)serve::ApiError(400, "x").body();
      answer_once(r);
    } catch (const serve::ApiError& e) {
      if (e.status < 400 || e.status > 599) __builtin_trap();
      (void)boost::json::serialize(e.body());
    }
  }
  try {  // OpenAI's Responses body: translated into chat, answered, shaped back, stored, continued
    static serve::ResponseStore store(16, 1 << 20);
    serve::ResponsesRequest rr = serve::translate_responses_request(v.as_object(), store);
    serve::ParsedRequest r = serve::parse_responses_request(rr, f.info);
    if (r.prompts.empty() || r.endpoint != serve::Endpoint::chat) __builtin_trap();
    answer_once(r);
    respond_once(std::move(rr), r, store);
  } catch (const serve::ApiError& e) {
    if (e.status < 400 || e.status > 599) __builtin_trap();
    (void)boost::json::serialize(e.body());
  }
  try {  // SGLang's /generate body
    serve::ParsedRequest r = serve::parse_native_request(v, f.info);
    if (r.prompts.empty() || !r.native) __builtin_trap();
    if (!r.native_rids.empty() && r.native_rids.size() != r.prompts.size()) __builtin_trap();
    answer_once(r);
  } catch (const serve::ApiError& e) {
    if (e.status < 400 || e.status > 599) __builtin_trap();
  }
}

// 3. The bytes as a model's output through the tool-call reader, in pieces of a size the first
//    byte picks: when no call reads, the content is the input exactly (nothing lost); calls that
//    read have a name without spaces and arguments.
void tool_call_text(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const std::size_t step = 1 + data[0] % 17;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  serve::ToolCallStream s(serve::ToolParser::deepseek);
  std::string content;
  for (std::size_t at = 0; at < text.size(); at += step) content += s.push(text.substr(at, step), false);
  content += s.push("", true);
  if (s.calls().empty() && content != text) __builtin_trap();
  if (content.size() > text.size()) __builtin_trap();
  for (const auto& c : s.calls())
    if (c.name.empty() || c.name.find_first_of(" \t\r\n") != std::string::npos || c.arguments.empty())
      __builtin_trap();
  // The reasoning split loses nothing either: reasoning + </think> + content is the text (less an
  // opening <think>), and without </think> all of it is reasoning.
  serve::ReasoningStream r;
  std::string reasoning, answer;
  for (std::size_t at = 0; at <= text.size(); at += step) {
    const bool final = at + step > text.size();
    auto x = r.push(text.substr(at, final ? std::string_view::npos : step), final);
    reasoning += x.reasoning;
    answer += x.content;
  }
  std::string_view body = text;
  if (body.substr(0, 7) == "<think>") body.remove_prefix(7);
  const auto close = body.find("</think>");
  if (close == std::string_view::npos ? (reasoning != body || !answer.empty())
                                      : (reasoning != body.substr(0, close) || answer != body.substr(close + 8)))
    __builtin_trap();
}

// 4. The bytes as a JSON text through the structured-output recognizer (response_format
//    json_object): it completes exactly the texts Boost.JSON parses as objects, apart from its own
//    rules (nothing after the object, whitespace runs of at most 32 bytes) and exponents past a
//    double's range (Boost.JSON refuses those).
void json_structure(const uint8_t* data, size_t size) {
  engine::JsonPrefix p;
  std::size_t taken = 0;
  while (taken < size && p.feed(data[taken])) ++taken;
  const bool complete = taken == size && p.complete();
  boost::system::error_code ec;
  boost::json::parse_options opt;
  opt.max_depth = engine::JsonPrefix::kMaxDepth;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const boost::json::value v = boost::json::parse(text, ec, {}, opt);
  if (ec == boost::json::error::exponent_overflow) return;
  const bool parsed = !ec && v.is_object();
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  std::size_t run = 0, longest = 0;
  for (char c : text) longest = std::max(longest, run = ws(c) ? run + 1 : 0);
  if (parsed && (ws(text.back()) || longest > engine::JsonPrefix::kMaxWhitespace)) return;
  if (complete != parsed) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 16)) return 0;
  (void)fuzz::model_fixture();
  http_parse(data, size);
  json_request(data, size);
  tool_call_text(data, size);
  json_structure(data, size);
  return 0;
}
