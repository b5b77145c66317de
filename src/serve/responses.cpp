// OpenAI's Responses API over the chat path: request translation, response objects and stream
// events.
#include "serve/responses.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace dpa::serve {

namespace json = boost::json;

std::string new_item_id(const char* prefix) {
  static std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:016x}", prefix, rng(), rng());
}

std::string new_response_id() { return new_item_id("resp_"); }

// ---- request translation --------------------------------------------------------------------

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) { bad_request(param, msg); }
const json::value* field(const json::object& o, const char* name) { return request_field(o, name); }

// The string field `name` of an object inside the param `param` (an input item, a tool, ...).
std::string string_field(const json::object& o, const char* name, const std::string& param) {
  const json::value* v = field(o, name);
  if (!v || !v->is_string()) bad(param, fmt::format("'{}' needs a string '{}'", param, name));
  return std::string(v->as_string());
}

// Fields of OpenAI's Responses API that would change the answer and that this server cannot
// honour: refused rather than ignored.
void refuse_unsupported(const json::object& o) {
  if (const json::value* b = field(o, "background"); b && !(b->is_bool() && !b->as_bool()))
    bad("background", "'background' responses are not supported by this server: send the request and wait for it (or stream)");
  if (const json::value* inc = field(o, "include"); inc && !(inc->is_array() && inc->as_array().empty())) {
    std::string what = inc->is_array() && inc->as_array()[0].is_string() ? std::string(inc->as_array()[0].as_string()) : "?";
    bad("include", fmt::format("'include' value '{}' is not supported by this server", what));
  }
  if (const json::value* t = field(o, "truncation"); t && !(t->is_string() && t->as_string() == "disabled"))
    bad("truncation", "'truncation' must be \"disabled\": this server does not drop input to fit the context");
  for (const char* name : {"conversation", "prompt", "max_tool_calls", "top_logprobs"})
    if (field(o, name)) bad(name, fmt::format("'{}' is not supported by this server's /v1/responses", name));
}

// A message content part: text kept (as the chat path's {"type": "text"} part), anything else refused.
json::value content_part(const json::value& part) {
  const json::value* type = part.is_object() ? field(part.as_object(), "type") : nullptr;
  if (!type || !type->is_string()) bad("input", "each content part must be an object with a string 'type'");
  const std::string t(type->as_string());
  const char* key = t == "input_text" || t == "output_text" ? "text" : t == "refusal" ? "refusal" : nullptr;
  if (!key) bad("input", fmt::format("'{}' content is not supported by this server: the model reads text only", t));
  return json::object{{"type", "text"}, {"text", string_field(part.as_object(), key, "input")}};
}

json::value message_content(const json::value* c) {
  if (!c) bad("input", "each message needs 'content'");
  if (c->is_string()) return *c;
  if (!c->is_array()) bad("input", "a message's 'content' must be a string or an array of content parts");
  json::array parts;
  for (const auto& p : c->as_array()) parts.push_back(content_part(p));
  return parts;
}

// A function call output's text: a string, or input_text parts joined.
std::string call_output(const json::value* out) {
  if (!out) bad("input", "a 'function_call_output' item needs 'output'");
  if (out->is_string()) return std::string(out->as_string());
  if (!out->is_array()) bad("input", "a 'function_call_output' item's 'output' must be a string or content parts");
  std::string text;
  for (const auto& p : out->as_array()) {
    const json::value part = content_part(p);
    if (!text.empty()) text += "\n";
    text += std::string(part.at("text").as_string());
  }
  return text;
}

// A function_call item as a chat tool call: its call_id is the id the tool's output refers to.
json::object past_call(const json::object& item) {
  json::value args = json::string("{}");
  if (const json::value* a = field(item, "arguments")) {
    if (a->is_object()) args = json::string(json::serialize(*a));
    else if (a->is_string()) args = *a;
    else bad("input", "a 'function_call' item's 'arguments' must be a JSON string");
  }
  return json::object{{"id", string_field(item, "call_id", "input")},
                      {"type", "function"},
                      {"function", json::object{{"name", string_field(item, "name", "input")}, {"arguments", args}}}};
}

// An input item as input_items lists it: as sent, with an id, its type and a status where it had
// none, and a message's string content as one text part (OpenAI's form of it).
json::object listed_item(const json::object& item, const std::string& type) {
  const json::value* id = field(item, "id");
  const char* prefix = type == "message" ? "msg_" : type == "function_call" ? "fc_" : type == "reasoning" ? "rs_" : "fco_";
  json::object out{{"id", id && id->is_string() ? *id : json::value(new_item_id(prefix))}, {"type", type}};
  for (const auto& kv : item)
    if (kv.key() != "id" && kv.key() != "type") out[kv.key()] = kv.value();
  if (type == "message" && out.at("content").is_string()) {
    const bool said = out.at("role") == "assistant";
    json::object part{{"type", said ? "output_text" : "input_text"}, {"text", out.at("content")}};
    if (said) part["annotations"] = json::array{};
    out["content"] = json::array{std::move(part)};
  }
  if (type == "function_call" && out.contains("arguments") && out.at("arguments").is_object())
    out["arguments"] = json::serialize(out.at("arguments"));
  if (!field(out, "status")) out["status"] = "completed";
  return out;
}

// Appends one input item to the chat messages, and as input_items lists it to `items`. Calls join
// the assistant message before them (the DeepSeek templates write one assistant turn with all its
// calls); reasoning items of earlier turns are left out of the messages, as the DeepSeek templates
// leave out earlier turns' reasoning.
void add_input_item(const json::value& v, json::array& msgs, json::array& items) {
  if (!v.is_object()) bad("input", "each input item must be an object");
  const json::object& item = v.as_object();
  const json::value* tv = field(item, "type");
  if (tv && !tv->is_string()) bad("input", "an input item's 'type' must be a string");
  const std::string type = tv ? std::string(tv->as_string()) : "message";
  if (type == "message") {
    std::string role = string_field(item, "role", "input");
    if (role == "developer") role = "system";
    if (role != "user" && role != "assistant" && role != "system")
      bad("input", fmt::format("a message's 'role' must be user, assistant, system or developer, got '{}'", role));
    msgs.push_back(json::object{{"role", role}, {"content", message_content(field(item, "content"))}});
  } else if (type == "function_call") {
    json::object call = past_call(item);
    json::object* last = msgs.empty() ? nullptr : msgs.back().if_object();
    if (!last || !last->contains("role") || last->at("role") != "assistant")
      last = &msgs.emplace_back(json::object{{"role", "assistant"}, {"content", ""}}).as_object();
    if (!last->contains("tool_calls")) (*last)["tool_calls"] = json::array{};
    (*last)["tool_calls"].as_array().push_back(std::move(call));
  } else if (type == "function_call_output") {
    msgs.push_back(json::object{{"role", "tool"},
                                {"tool_call_id", string_field(item, "call_id", "input")},
                                {"content", call_output(field(item, "output"))}});
  } else if (type != "reasoning") {
    bad("input", fmt::format("input items of type '{}' are not supported by this server", type));
  }
  items.push_back(listed_item(item, type));
}

// The input as chat messages; `items` gets it as Responses items.
json::array translate_input(const json::object& o, json::array& items) {
  const json::value* in = field(o, "input");
  if (!in) bad("input", "'input' is required");
  json::array msgs;
  if (in->is_string()) {
    msgs.push_back(json::object{{"role", "user"}, {"content", *in}});
    items.push_back(listed_item(json::object{{"role", "user"}, {"content", *in}}, "message"));
  } else if (in->is_array()) {
    for (const auto& item : in->as_array()) add_input_item(item, msgs, items);
  } else {
    bad("input", "'input' must be a string or an array of input items");
  }
  if (msgs.empty()) bad("input", "'input' must not be empty");
  return msgs;
}

// Function tools as chat tools ({"type": "function", "function": {...}}); the Responses shape
// ({"type": "function", "name", ...}) is what the response repeats. Hosted tools are refused.
void translate_tools(const json::object& o, ResponsesRequest& r) {
  const json::value* tools = field(o, "tools");
  json::array echo;
  if (tools) {
    if (!tools->is_array()) bad("tools", "'tools' must be an array");
    json::array chat;
    for (const auto& t : tools->as_array()) {
      const json::value* type = t.is_object() ? field(t.as_object(), "type") : nullptr;
      if (!type || !type->is_string()) bad("tools", "each tool must be an object with a string 'type'");
      if (type->as_string() != "function")
        bad("tools", fmt::format("tools of type '{}' are not supported by this server: only 'function' tools are",
                                 std::string(type->as_string())));
      const json::object& ft = t.as_object();
      const std::string name = string_field(ft, "name", "tools");
      json::object fn{{"name", name}};
      const json::value* params = field(ft, "parameters");
      if (params && !params->is_object())
        bad("tools", fmt::format("the parameters of tool '{}' must be a JSON Schema object", name));
      const json::value* desc = field(ft, "description");
      if (desc && !desc->is_string()) bad("tools", fmt::format("the description of tool '{}' must be a string", name));
      const json::value* strict = field(ft, "strict");
      if (strict && !strict->is_bool()) bad("tools", fmt::format("'strict' of tool '{}' must be a boolean", name));
      if (desc) fn["description"] = *desc;
      if (params) fn["parameters"] = *params;
      chat.push_back(json::object{{"type", "function"}, {"function", fn}});
      echo.push_back(json::object{{"type", "function"},
                                  {"name", name},
                                  {"description", desc ? *desc : json::value(nullptr)},
                                  {"parameters", params ? *params : json::value(nullptr)},
                                  {"strict", strict ? *strict : json::value(true)}});
    }
    if (!chat.empty()) r.chat["tools"] = std::move(chat);
  }
  r.echo["tools"] = std::move(echo);
  const json::value* choice = field(o, "tool_choice");
  r.echo["tool_choice"] = choice ? *choice : json::value("auto");
  if (!choice) return;
  if (choice->is_string()) {
    r.chat["tool_choice"] = *choice;  // none | auto | required, checked by the chat path
    return;
  }
  const json::value* type = choice->is_object() ? field(choice->as_object(), "type") : nullptr;
  if (!type || !type->is_string()) bad("tool_choice", "'tool_choice' must be a string or an object with a string 'type'");
  if (type->as_string() != "function")
    bad("tool_choice", fmt::format("'tool_choice' of type '{}' is not supported by this server", std::string(type->as_string())));
  r.chat["tool_choice"] = json::object{
      {"type", "function"}, {"function", json::object{{"name", string_field(choice->as_object(), "name", "tool_choice")}}}};
}

// text.format as the chat path's response_format.
void translate_text(const json::object& o, ResponsesRequest& r) {
  json::object echo{{"format", json::object{{"type", "text"}}}};
  if (const json::value* text = field(o, "text")) {
    if (!text->is_object()) bad("text", "'text' must be an object");
    const json::object& t = text->as_object();
    if (const json::value* verb = field(t, "verbosity")) {
      if (!verb->is_string() || verb->as_string() != "medium")
        bad("text.verbosity", "'text.verbosity' other than \"medium\" is not supported by this server");
      echo["verbosity"] = *verb;
    }
    if (const json::value* f = field(t, "format")) {
      const json::value* type = f->is_object() ? field(f->as_object(), "type") : nullptr;
      if (!type || !type->is_string()) bad("text.format", "'text.format' must be an object with a string 'type'");
      const std::string ty(type->as_string());
      const json::object& fo = f->as_object();
      if (ty == "json_schema") {
        const json::value* schema = field(fo, "schema");
        if (!schema || !schema->is_object()) bad("text.format", "'text.format' of type 'json_schema' needs a 'schema' object");
        json::object js{{"name", string_field(fo, "name", "text.format")}, {"schema", *schema}};
        if (const json::value* s = field(fo, "strict")) js["strict"] = *s;
        r.chat["response_format"] = json::object{{"type", "json_schema"}, {"json_schema", js}};
      } else if (ty == "json_object") {
        r.chat["response_format"] = json::object{{"type", "json_object"}};
      } else if (ty != "text") {
        bad("text.format", fmt::format("'text.format' of type '{}' is not supported by this server; send 'text', "
                                       "'json_object' or 'json_schema'", ty));
      }
      echo["format"] = *f;
    }
  }
  r.echo["text"] = std::move(echo);
}

// OpenAI's limits: at most 16 pairs, keys up to 64 characters, string values up to 512.
void check_metadata(const json::value* m) {
  if (!m) return;
  const char* form = "'metadata' must be an object of at most 16 string values (keys up to 64 characters, values up to 512)";
  if (!m->is_object() || m->as_object().size() > 16) bad("metadata", form);
  for (const auto& kv : m->as_object())
    if (kv.key().size() > 64 || !kv.value().is_string() || kv.value().as_string().size() > 512) bad("metadata", form);
}

void echo_settings(const json::object& o, ResponsesRequest& r) {
  auto number_or = [&](const char* name, double def) {
    const json::value* v = field(o, name);
    return v ? *v : json::value(def);
  };
  const json::value* instr = field(o, "instructions");
  r.echo["instructions"] = instr ? *instr : json::value(nullptr);
  r.echo["max_output_tokens"] = field(o, "max_output_tokens") ? o.at("max_output_tokens") : json::value(nullptr);
  r.echo["temperature"] = number_or("temperature", 1.0);
  r.echo["top_p"] = number_or("top_p", 1.0);
  check_metadata(field(o, "metadata"));
  r.echo["metadata"] = field(o, "metadata") ? o.at("metadata") : json::value(json::object{});
  r.echo["parallel_tool_calls"] = r.parallel_tool_calls;
  r.echo["store"] = r.store;
  r.echo["truncation"] = "disabled";
  // Accepted: the effort is not a setting of this server's models (chat_template_kwargs
  // "thinking" switches DeepSeek-V3.1's reasoning on and off); the reasoning item carries the
  // reasoning text itself, not a summary.
  if (const json::value* re = field(o, "reasoning"); re && !re->is_object()) bad("reasoning", "'reasoning' must be an object");
  r.echo["reasoning"] = field(o, "reasoning") ? o.at("reasoning") : json::value(json::object{{"effort", nullptr}, {"summary", nullptr}});
  for (const char* name : {"user", "service_tier", "prompt_cache_key", "safety_identifier"})
    if (const json::value* v = field(o, name)) {
      if (!v->is_string()) bad(name, fmt::format("'{}' must be a string", name));
      r.echo[name] = *v;
    }
}

bool get_bool(const json::object& o, const char* name, bool def) {
  const json::value* v = field(o, name);
  if (!v) return def;
  if (!v->is_bool()) bad(name, fmt::format("'{}' must be a boolean", name));
  return v->as_bool();
}

}  // namespace

ResponsesRequest translate_responses_request(const json::object& o, ResponseStore& store) {
  refuse_unsupported(o);
  ResponsesRequest r;
  // With a store that keeps nothing, store: true is answered as store: false (vLLM does the same
  // with its store off): clients send it by default, and the answer itself is unchanged.
  r.store = get_bool(o, "store", true) && store.keeps_any();
  r.parallel_tool_calls = get_bool(o, "parallel_tool_calls", true);
  const bool stream = get_bool(o, "stream", false);
  if (const json::value* so = field(o, "stream_options")) {  // include_obfuscation pads events: nothing to pad here
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!stream) bad("stream_options", "'stream_options' needs 'stream': true");
  }
  json::array messages;
  if (const json::value* instr = field(o, "instructions")) {  // not carried over to a later turn, as OpenAI's
    if (!instr->is_string()) bad("instructions", "'instructions' must be a string");
    if (!instr->as_string().empty()) messages.push_back(json::object{{"role", "system"}, {"content", *instr}});
  }
  r.echo["previous_response_id"] = nullptr;
  if (const json::value* prev = field(o, "previous_response_id")) {
    if (!prev->is_string()) bad("previous_response_id", "'previous_response_id' must be a string");
    const std::string id(prev->as_string());
    const ResponseStore::Entry* e = store.find(id);
    if (!e) throw ApiError(404, store.not_found_message(id), "previous_response_id", "invalid_request_error");
    r.conversation = e->conversation;
    r.input_items = e->input_items;  // what the earlier response read, then what it answered
    if (const json::value* out = e->response.if_contains("output"); out && out->is_array())
      for (const auto& item : out->as_array()) r.input_items.push_back(item);
    r.echo["previous_response_id"] = id;
  }
  for (auto& m : translate_input(o, r.input_items)) r.conversation.push_back(std::move(m));
  for (const auto& m : r.conversation) messages.push_back(m);
  r.chat["messages"] = std::move(messages);
  r.chat["stream"] = stream;
  if (const json::value* m = field(o, "model")) r.chat["model"] = *m;
  if (const json::value* mt = field(o, "max_output_tokens")) r.chat["max_completion_tokens"] = *mt;
  translate_tools(o, r);
  translate_text(o, r);
  echo_settings(o, r);
  // The sampling fields both APIs share, and vLLM's extra ones the chat path serves.
  for (const char* name : {"temperature", "top_p", "seed", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                           "repetition_penalty", "stop", "stop_token_ids", "ignore_eos", "min_tokens", "logit_bias",
                           "skip_special_tokens", "include_stop_str_in_output", "chat_template_kwargs", "include_reasoning",
                           "data_parallel_rank", "bad_words", "allowed_token_ids", "priority"})
    if (const json::value* v = field(o, name)) r.chat[name] = *v;
  return r;
}

namespace {
// The chat path's names in its messages and params, as the Responses request calls them.
std::string responses_name(std::string s) {
  static const std::pair<const char*, const char*> kNames[] = {{"max_completion_tokens", "max_output_tokens"},
                                                               {"response_format", "text.format"},
                                                               {"messages", "input"}};
  for (const auto& [chat, resp] : kNames)
    for (std::size_t at = s.find(chat); at != std::string::npos; at = s.find(chat, at + std::strlen(resp)))
      s.replace(at, std::strlen(chat), resp);
  return s;
}
}  // namespace

ParsedRequest parse_responses_request(const ResponsesRequest& r, const ModelInfo& model) {
  try {
    return parse_request(r.chat, Endpoint::chat, model);
  } catch (const ApiError& e) {
    throw ApiError(e.status, responses_name(e.what()), responses_name(e.param), e.type);
  }
}

// ---- the response and its events ------------------------------------------------------------

namespace {
bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

// "completed", "incomplete" (cut by max_output_tokens) or "cancelled" (the drain's timeout).
std::string response_status(const Generation& g) {
  const std::string why = g.engine_finish_reason();
  return why == "length" ? "incomplete" : why == "abort" ? "cancelled" : "completed";
}

json::object reasoning_item(const std::string& id, const std::string& text, const std::string& status) {
  json::array content;
  if (!text.empty()) content.push_back(json::object{{"type", "reasoning_text"}, {"text", text}});
  return json::object{{"id", id}, {"type", "reasoning"}, {"summary", json::array{}}, {"content", content}, {"status", status}};
}

json::object output_text(const std::string& text) {
  return json::object{{"type", "output_text"}, {"text", text}, {"annotations", json::array{}}, {"logprobs", json::array{}}};
}

json::object message_item(const std::string& id, const std::string& text, const std::string& status, bool with_part) {
  json::array content;
  if (with_part) content.push_back(output_text(text));
  return json::object{{"id", id}, {"type", "message"}, {"role", "assistant"}, {"status", status}, {"content", content}};
}
}  // namespace

ResponseShaper::ResponseShaper(ResponsesRequest req, std::string id, std::string model, int64_t created_at)
    : req_(std::move(req)), id_(std::move(id)), model_(std::move(model)), created_at_(created_at) {
  stem_ = id_.rfind("resp_", 0) == 0 ? id_.substr(5) : id_;
}

json::object ResponseShaper::base(const std::string& status) const {
  json::object r{{"id", id_},           {"object", "response"}, {"created_at", created_at_}, {"status", status},
                 {"background", false}, {"error", nullptr},     {"incomplete_details", nullptr}, {"model", model_},
                 {"output", json::array{}}};
  for (const auto& kv : req_.echo) r[kv.key()] = kv.value();
  r["usage"] = nullptr;
  return r;
}

// With parallel_tool_calls false, the first call only.
std::vector<ToolCall> ResponseShaper::kept_calls(const std::vector<ToolCall>& calls) const {
  if (req_.parallel_tool_calls || calls.size() <= 1) return calls;
  return {calls.front()};
}

json::object ResponseShaper::call_item(const ToolCall& c, std::size_t index) const {
  return json::object{{"id", fmt::format("fc_{}_{}", stem_, index)},
                      {"type", "function_call"},
                      {"call_id", fmt::format("call_{}_{}", stem_, index)},
                      {"name", c.name},
                      {"arguments", c.arguments},
                      {"status", "completed"}};
}

json::object ResponseShaper::response(const Generation& g, int64_t prompt_tokens) const {
  const std::string status = response_status(g);
  const std::string item_status = status == "completed" ? "completed" : "incomplete";
  json::object r = base(status);
  json::array out;
  if (g.splits_reasoning() && g.include_reasoning() && !g.reasoning().empty())
    out.push_back(reasoning_item("rs_" + stem_, g.reasoning(), item_status));
  const std::vector<ToolCall> calls = kept_calls(g.tool_calls());
  const bool message = !blank(g.content()) || calls.empty();
  if (message && !message_after_calls_) out.push_back(message_item("msg_" + stem_, g.content(), item_status, true));
  for (std::size_t k = 0; k < calls.size(); ++k) out.push_back(call_item(calls[k], k));
  if (message && message_after_calls_) out.push_back(message_item("msg_" + stem_, g.content(), item_status, true));
  r["output"] = std::move(out);
  if (g.engine_finish_reason() == "length") r["incomplete_details"] = json::object{{"reason", "max_output_tokens"}};
  const int64_t output_tokens = static_cast<int64_t>(g.tokens().size());
  r["usage"] = json::object{{"input_tokens", prompt_tokens},
                            {"input_tokens_details", json::object{{"cached_tokens", std::max<int64_t>(0, g.cached_tokens())}}},
                            {"output_tokens", output_tokens},
                            {"output_tokens_details", json::object{{"reasoning_tokens", g.reasoning_tokens()}}},
                            {"total_tokens", prompt_tokens + output_tokens}};
  return r;
}

json::array ResponseShaper::conversation(const Generation& g) const {
  json::array conv = req_.conversation;
  json::object msg{{"role", "assistant"}, {"content", g.content()}};
  const std::vector<ToolCall> calls = kept_calls(g.tool_calls());
  if (!calls.empty()) {
    json::array tc;
    for (std::size_t k = 0; k < calls.size(); ++k)
      tc.push_back(json::object{{"id", fmt::format("call_{}_{}", stem_, k)},
                                {"type", "function"},
                                {"function", json::object{{"name", calls[k].name}, {"arguments", calls[k].arguments}}}});
    msg["tool_calls"] = std::move(tc);
  }
  conv.push_back(std::move(msg));
  return conv;
}

std::string ResponseShaper::event(const char* type, json::object fields) {
  json::object e{{"type", type}, {"sequence_number", sequence_++}};
  for (auto& kv : fields) e[kv.key()] = std::move(kv.value());
  return fmt::format("event: {}\ndata: {}\n\n", type, json::serialize(e));
}

std::string ResponseShaper::start_events() {
  std::string out = event("response.created", {{"response", base("in_progress")}});
  out += event("response.in_progress", {{"response", base("in_progress")}});
  return out;
}

std::string ResponseShaper::open_reasoning() {
  open_ = Open::reasoning;
  open_index_ = n_items_++;
  const std::string item_id = "rs_" + stem_;
  std::string out = event("response.output_item.added",
                          {{"output_index", open_index_}, {"item", reasoning_item(item_id, "", "in_progress")}});
  out += event("response.content_part.added", {{"item_id", item_id},
                                                {"output_index", open_index_},
                                                {"content_index", 0},
                                                {"part", json::object{{"type", "reasoning_text"}, {"text", ""}}}});
  return out;
}

std::string ResponseShaper::open_message() {
  open_ = Open::message;
  open_index_ = n_items_++;
  had_message_ = true;
  message_after_calls_ = n_calls_ > 0;
  const std::string item_id = "msg_" + stem_;
  std::string out = event("response.output_item.added",
                          {{"output_index", open_index_}, {"item", message_item(item_id, "", "in_progress", false)}});
  out += event("response.content_part.added",
               {{"item_id", item_id}, {"output_index", open_index_}, {"content_index", 0}, {"part", output_text("")}});
  return out;
}

std::string ResponseShaper::close_open(const std::string& status) {
  std::string out;
  const json::object where{{"output_index", open_index_}, {"content_index", 0}};
  auto with = [&](json::object fields) {
    for (const auto& kv : where) fields[kv.key()] = kv.value();
    return fields;
  };
  if (open_ == Open::reasoning) {
    const std::string item_id = "rs_" + stem_;
    out += event("response.reasoning_text.done", with({{"item_id", item_id}, {"text", open_text_}}));
    out += event("response.content_part.done",
                 with({{"item_id", item_id}, {"part", json::object{{"type", "reasoning_text"}, {"text", open_text_}}}}));
    out += event("response.output_item.done", {{"output_index", open_index_}, {"item", reasoning_item(item_id, open_text_, status)}});
  } else if (open_ == Open::message) {
    const std::string item_id = "msg_" + stem_;
    out += event("response.output_text.done", with({{"item_id", item_id}, {"text", open_text_}, {"logprobs", json::array{}}}));
    out += event("response.content_part.done", with({{"item_id", item_id}, {"part", output_text(open_text_)}}));
    out += event("response.output_item.done",
                 {{"output_index", open_index_}, {"item", message_item(item_id, open_text_, status, true)}});
  }
  open_ = Open::none;
  open_text_.clear();
  return out;
}

std::string ResponseShaper::piece_events(const std::string& reasoning, const std::string& text,
                                         const std::vector<ToolCall>& calls) {
  std::string out;
  if (!reasoning.empty()) {
    if (open_ != Open::reasoning) {
      out += close_open("completed");
      out += open_reasoning();
    }
    out += event("response.reasoning_text.delta",
                 {{"item_id", "rs_" + stem_}, {"output_index", open_index_}, {"content_index", 0}, {"delta", reasoning}});
    open_text_ += reasoning;
  }
  // Blank text waits: a message item opens with the first visible text (or at the end when no
  // call came), as the response object has one.
  pending_text_ += text;
  if (open_ != Open::message && !had_message_ && !blank(pending_text_)) {
    out += close_open("completed");
    out += open_message();
  }
  if (open_ == Open::message && !pending_text_.empty()) {
    out += event("response.output_text.delta", {{"item_id", "msg_" + stem_},
                                                 {"output_index", open_index_},
                                                 {"content_index", 0},
                                                 {"delta", pending_text_},
                                                 {"logprobs", json::array{}}});
    open_text_ += pending_text_;
    pending_text_.clear();
  }
  for (const ToolCall& c : calls) {
    if (!req_.parallel_tool_calls && n_calls_ > 0) break;
    out += close_open("completed");
    const std::size_t index = n_items_++;
    json::object item = call_item(c, n_calls_++);
    const std::string item_id(item.at("id").as_string());
    json::object started = item;
    started["arguments"] = "";
    started["status"] = "in_progress";
    out += event("response.output_item.added", {{"output_index", index}, {"item", started}});
    out += event("response.function_call_arguments.delta", {{"item_id", item_id}, {"output_index", index}, {"delta", c.arguments}});
    out += event("response.function_call_arguments.done", {{"item_id", item_id}, {"output_index", index}, {"arguments", c.arguments}});
    out += event("response.output_item.done", {{"output_index", index}, {"item", item}});
  }
  return out;
}

std::string ResponseShaper::finish_events(const Generation& g, int64_t prompt_tokens) {
  const std::string status = response_status(g);
  std::string out;
  if (!had_message_ && n_calls_ == 0) {
    out += close_open("completed");
    out += open_message();
  }
  out += piece_events("", "", {});  // text held while blank
  out += close_open(status == "completed" ? "completed" : "incomplete");
  out += event(status == "completed" ? "response.completed" : "response.incomplete", {{"response", response(g, prompt_tokens)}});
  return out;
}

std::string ResponseShaper::error_event(const ApiError& e) {
  return event("error", {{"code", e.type}, {"message", e.what()}, {"param", e.param.empty() ? json::value(nullptr) : json::value(e.param)}});
}

}  // namespace dpa::serve
