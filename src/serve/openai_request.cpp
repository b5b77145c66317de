// Field-by-field validation of OpenAI request bodies.
#include "serve/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>

#include "core/error.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/regex.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace dpa::serve {

namespace json = boost::json;

ApiError::ApiError(int s, std::string message, std::string p, std::string t)
    : std::runtime_error(std::move(message)), status(s), param(std::move(p)), type(std::move(t)) {
  if (type.empty())
    type = status == 401 ? "authentication_error"
           : status == 404 ? "NotFoundError"
           : status == 429 ? "rate_limit_exceeded"
           : status >= 500 ? "server_error"
                           : "invalid_request_error";
}

json::object ApiError::body() const {
  json::object err;
  err["message"] = what();
  err["type"] = type;
  err["param"] = param.empty() ? json::value(nullptr) : json::value(param);
  err["code"] = status;
  return json::object{{"error", err}};
}

void bad_request(const std::string& param, const std::string& msg) { throw ApiError(400, msg, param); }

const json::value* request_field(const json::object& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end() || it->value().is_null()) return nullptr;
  return &it->value();
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) { bad_request(param, msg); }
const json::value* field(const json::object& o, const char* name) { return request_field(o, name); }

double get_number(const json::object& o, const char* name, double def, double lo, double hi) {
  const json::value* v = field(o, name);
  if (!v) return def;
  double d;
  if (v->is_double()) d = v->as_double();
  else if (v->is_int64()) d = static_cast<double>(v->as_int64());
  else if (v->is_uint64()) d = static_cast<double>(v->as_uint64());
  else bad(name, fmt::format("'{}' must be a number", name));
  if (!std::isfinite(d) || d < lo || d > hi) bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, d));
  return d;
}

int64_t get_int(const json::object& o, const char* name, int64_t def, int64_t lo, int64_t hi) {
  const json::value* v = field(o, name);
  if (!v) return def;
  int64_t i;
  if (v->is_int64()) i = v->as_int64();
  else if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(INT64_MAX)) i = static_cast<int64_t>(v->as_uint64());
  else if (v->is_double() && v->as_double() == std::floor(v->as_double()) && std::fabs(v->as_double()) < 9e15)
    i = static_cast<int64_t>(v->as_double());
  else bad(name, fmt::format("'{}' must be an integer", name));
  if (i < lo || i > hi) bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, i));
  return i;
}

bool get_bool(const json::object& o, const char* name, bool def) {
  const json::value* v = field(o, name);
  if (!v) return def;
  if (!v->is_bool()) bad(name, fmt::format("'{}' must be a boolean", name));
  return v->as_bool();
}

std::vector<int32_t> token_array(const json::array& a, const char* param, int64_t vocab) {
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (const auto& e : a) {
    if (!e.is_int64() && !e.is_uint64()) bad(param, fmt::format("'{}' token ids must be integers", param));
    const int64_t t = e.is_int64() ? e.as_int64() : static_cast<int64_t>(std::min<uint64_t>(e.as_uint64(), INT64_MAX));
    if (t < 0 || t >= vocab) bad(param, fmt::format("token id {} is out of vocabulary (size {})", t, vocab));
    ids.push_back(static_cast<int32_t>(t));
  }
  return ids;
}

std::vector<int32_t> encode(const ModelInfo& m, const std::string& s, bool add_special, const char* param = "prompt") {
  if (!m.tokenizer) bad(param, "this model has no tokenizer: send token ids");
  try {
    return m.tokenizer->encode(s, add_special);
  } catch (const Error& e) {  // e.g. invalid UTF-8 from a template that slices strings: a 400, not a 500
    bad(param, e.what());
  }
}

void parse_prompts(const json::object& o, const ModelInfo& m, ParsedRequest& r) {
  const bool add_special = get_bool(o, "add_special_tokens", true);  // vLLM's: the BOS token
  const json::value* p = field(o, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  if (p->is_string()) {
    r.prompts.push_back(encode(m, std::string(p->as_string()), add_special));
    if (r.echo) r.echo_texts.emplace_back(p->as_string());
  } else if (p->is_array()) {
    const auto& a = p->as_array();
    if (a.empty()) bad("prompt", "'prompt' must not be empty");
    if (a[0].is_string()) {
      for (const auto& e : a) {
        if (!e.is_string()) bad("prompt", "'prompt' mixes strings and other values");
        r.prompts.push_back(encode(m, std::string(e.as_string()), add_special));
        if (r.echo) r.echo_texts.emplace_back(e.as_string());
      }
    } else if (a[0].is_array()) {
      for (const auto& e : a) {
        if (!e.is_array()) bad("prompt", "'prompt' mixes token lists and other values");
        r.prompts.push_back(token_array(e.as_array(), "prompt", m.vocab_size));
      }
    } else {
      r.prompts.push_back(token_array(a, "prompt", m.vocab_size));
    }
  } else {
    bad("prompt", "'prompt' must be a string, an array of strings, or token ids");
  }
  for (const auto& ids : r.prompts)
    if (ids.empty()) bad("prompt", "'prompt' must not be empty");
  // Token-id prompts echo as their text (special tokens included), as vLLM's.
  if (r.echo && r.echo_texts.empty() && m.tokenizer)
    for (const auto& ids : r.prompts) r.echo_texts.push_back(m.tokenizer->decode(ids, false));
}

// An assistant message's earlier calls, as templates read them: arguments as JSON text (some
// clients send an object; DeepSeek's templates concatenate the string).
json::value past_tool_calls(const json::value& v) {
  if (!v.is_array()) bad("messages", "'tool_calls' must be an array");
  json::array out;
  for (const auto& e : v.as_array()) {
    const json::value* fn = e.is_object() ? field(e.as_object(), "function") : nullptr;
    const json::value* name = fn && fn->is_object() ? field(fn->as_object(), "name") : nullptr;
    if (!name || !name->is_string()) bad("messages", "each tool call needs a 'function' with a string 'name'");
    json::object call = e.as_object();
    json::object f = fn->as_object();
    const json::value* args = field(f, "arguments");
    if (!args) f["arguments"] = "{}";
    else if (args->is_object()) f["arguments"] = json::serialize(*args);
    else if (!args->is_string()) bad("messages", "a tool call's 'arguments' must be a JSON string or an object");
    if (!field(call, "type")) call["type"] = "function";
    call["function"] = std::move(f);
    out.push_back(std::move(call));
  }
  return out;
}

// A JSON document's local $refs ("#..."), moved under `at` (a JSON pointer) of a larger document.
void move_refs(json::value& v, const std::string& at) {
  if (auto* o = v.if_object()) {
    for (auto& kv : *o) {
      if (kv.key() == "$ref" && kv.value().is_string() && kv.value().as_string().starts_with("#"))
        kv.value() = "#" + at + std::string(kv.value().as_string()).substr(1);
      else if (kv.key() != "enum" && kv.key() != "const")  // values, not schemas
        move_refs(kv.value(), at);
    }
  } else if (auto* a = v.if_array()) {
    for (auto& e : *a) move_refs(e, at);
  }
}

// tool_choice "required" or {"type": "function", "function": {"name": ...}}, as vLLM serves them:
// the output is the named function's arguments (its parameters' schema), or a JSON array of
// {"name", "parameters"} objects, one of the tools each, and is read back as tool_calls.
void force_tools(const json::array& tools, const json::value* named, ParsedRequest& r) {
  auto params = [](const json::object& fn) {
    const json::value* ps = field(fn, "parameters");
    return ps ? *ps : json::value(json::object{{"type", "object"}});
  };
  json::value schema;
  if (named) {
    const json::value* fn = named->is_object() ? field(named->as_object(), "function") : nullptr;
    const json::value* name = fn && fn->is_object() ? field(fn->as_object(), "name") : nullptr;
    if (!name || !name->is_string())
      bad("tool_choice", "a named 'tool_choice' must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
    for (const auto& t : tools) {
      const json::object& f = t.at("function").as_object();
      if (f.at("name") == *name) schema = params(f);
    }
    if (schema.is_null())
      bad("tool_choice", fmt::format("'tool_choice' names '{}', which is not one of the tools", std::string(name->as_string())));
    r.forced_tools = ForcedTools::named;
    r.forced_tool = name->as_string();
  } else {
    json::array any;
    for (const auto& t : tools) {
      const json::object& f = t.at("function").as_object();
      json::value ps = params(f);
      move_refs(ps, fmt::format("/items/anyOf/{}/properties/parameters", any.size()));
      any.push_back(json::object{{"type", "object"},
                                 {"properties", json::object{{"name", json::object{{"const", f.at("name")}}},
                                                             {"parameters", std::move(ps)}}},
                                 {"required", json::array{"name", "parameters"}},
                                 {"additionalProperties", false}});
    }
    schema = json::object{{"type", "array"}, {"minItems", 1}, {"items", json::object{{"anyOf", std::move(any)}}}};
    r.forced_tools = ForcedTools::required;
  }
  if (r.params.structure != engine::Structure::none)
    bad("tool_choice", "'tool_choice' \"required\" or a named function cannot be combined with another output structure");
  r.params.json_schema = json::serialize(schema);
  try {
    engine::JsonSchema::compile_cached(r.params.json_schema);
  } catch (const Error& e) {
    bad("tools", fmt::format("the tools' parameters cannot be followed: {}", e.what()));
  }
  r.params.structure = engine::Structure::json_schema;
}

// `tools` and `tool_choice` (chat). Tool calls are read out of the output for "auto" (the default
// with tools) when the server has a parser; "required" and a named function constrain the output
// (force_tools).
void parse_tools(const json::object& o, const ModelInfo& m, ParsedRequest& r) {
  const json::value* tools = field(o, "tools");
  std::size_t n_tools = 0;
  if (tools) {
    if (!tools->is_array()) bad("tools", "'tools' must be an array");
    for (const auto& t : tools->as_array()) {
      const json::value* type = t.is_object() ? field(t.as_object(), "type") : nullptr;
      if (!type || !type->is_string() || type->as_string() != "function")
        bad("tools", "each tool must be an object with \"type\": \"function\"");
      const json::value* fn = field(t.as_object(), "function");
      const json::value* name = fn && fn->is_object() ? field(fn->as_object(), "name") : nullptr;
      if (!name || !name->is_string() || name->as_string().empty())
        bad("tools", "each tool needs a 'function' with a non-empty string 'name'");
      if (const json::value* ps = field(fn->as_object(), "parameters"); ps && !ps->is_object())
        bad("tools", fmt::format("the parameters of tool '{}' must be a JSON Schema object", std::string(name->as_string())));
    }
    n_tools = tools->as_array().size();
  }
  const json::value* choice = field(o, "tool_choice");
  std::string how = n_tools > 0 ? "default" : "none";
  if (choice) {
    if (choice->is_string()) {
      how = std::string(choice->as_string());
      if (how != "none" && how != "auto" && how != "required")
        bad("tool_choice", fmt::format("'tool_choice' must be \"none\", \"auto\", \"required\" or a named function, got \"{}\"", how));
    } else if (choice->is_object()) {
      how = "named";
    } else {
      bad("tool_choice", "'tool_choice' must be a string or an object");
    }
    if (how != "none" && n_tools == 0) bad("tool_choice", "'tool_choice' needs 'tools'");
  }
  if (how == "required" || how == "named") return force_tools(tools->as_array(), how == "named" ? choice : nullptr, r);
  if (how == "auto" && m.tool_parser == ToolParser::none)
    bad("tool_choice", "\"auto\" tool choice needs a tool-call parser: start the server with --tool-call-parser deepseek_v3");
  // Without a parser, tools left to the default still reach the template; the output is text.
  if (how == "auto" || how == "default") r.tool_parser = m.tool_parser;
}

void parse_messages(const json::object& o, const ModelInfo& m, ParsedRequest& r) {
  const json::value* msgs = field(o, "messages");
  if (!msgs || !msgs->is_array() || msgs->as_array().empty()) bad("messages", "'messages' must be a non-empty array");
  json::array clean;
  for (const auto& e : msgs->as_array()) {
    if (!e.is_object()) bad("messages", "each message must be an object");
    const auto& mo = e.as_object();
    const json::value* role = field(mo, "role");
    if (!role || !role->is_string()) bad("messages", "each message needs a string 'role'");
    json::object msg = mo;
    // Content as a list of parts: keep the text parts, joined (vLLM does the same for text-only models).
    if (const json::value* c = field(mo, "content"); c && c->is_array()) {
      std::string text;
      for (const auto& part : c->as_array()) {
        if (!part.is_object()) bad("messages", "content parts must be objects");
        const json::value* t = field(part.as_object(), "text");
        const json::value* ty = field(part.as_object(), "type");
        if (!ty || !ty->is_string() || ty->as_string() != "text" || !t || !t->is_string())
          bad("messages", "only text content parts are supported");
        if (!text.empty()) text += "\n";
        text += std::string(t->as_string());
      }
      msg["content"] = text;
    } else if (c && !c->is_string()) {
      bad("messages", "'content' must be a string or an array of text parts");
    }
    if (const json::value* calls = field(mo, "tool_calls")) msg["tool_calls"] = past_tool_calls(*calls);
    clean.push_back(std::move(msg));
  }
  if (!m.chat_template) bad("messages", "this model has no chat template");
  // vLLM's continue_final_message: the model goes on with the last (assistant) message instead
  // of starting a new one, e.g. after a prefilled "{" to answer in JSON.
  const bool continue_final = get_bool(o, "continue_final_message", false);
  const bool generation_prompt = get_bool(o, "add_generation_prompt", !continue_final);
  std::string final_content;
  if (continue_final) {
    if (generation_prompt)
      bad("continue_final_message", "'continue_final_message' and 'add_generation_prompt' cannot both be true");
    const json::value* role = field(clean.back().as_object(), "role");
    const json::value* c = field(clean.back().as_object(), "content");
    if (!role || role->as_string() != "assistant" || !c || !c->is_string() || c->as_string().empty())
      bad("continue_final_message", "'continue_final_message' needs a last assistant message with text content");
    final_content = std::string(c->as_string());
  }
  json::object ctx;
  ctx["messages"] = clean;
  ctx["add_generation_prompt"] = generation_prompt;
  ctx["bos_token"] = m.bos_token;
  ctx["eos_token"] = m.eos_token;
  if (const json::value* t = field(o, "tools")) ctx["tools"] = *t;  // checked by parse_tools
  if (const json::value* k = field(o, "chat_template_kwargs")) {
    if (!k->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    for (const auto& kv : k->as_object()) ctx[kv.key()] = kv.value();
  }
  std::string text;
  try {
    text = m.chat_template->render(ctx);
  } catch (const Error& e) {
    bad("messages", std::string("chat template: ") + e.what());
  }
  if (continue_final) {  // cut what the template wrote after the final message (its end of turn)
    const auto at = text.rfind(final_content);
    if (at == std::string::npos)
      bad("continue_final_message", "the chat template does not write the last message's content as it is");
    text.resize(at + final_content.size());
  }
  // The template already holds the BOS token: vLLM adds none unless asked (add_special_tokens).
  r.prompts.push_back(encode(m, text, get_bool(o, "add_special_tokens", false), "messages"));
  if (r.prompts.back().empty()) bad("messages", "the rendered conversation is empty");
}

// vLLM's truncate_prompt_tokens: keep the last k prompt tokens (-1: the model's length).
void truncate_prompts(const json::object& o, const ModelInfo& m, ParsedRequest& r) {
  if (!field(o, "truncate_prompt_tokens")) return;
  int64_t k = get_int(o, "truncate_prompt_tokens", -1, -1, m.max_model_len);
  if (k == 0) bad("truncate_prompt_tokens", "'truncate_prompt_tokens' must be -1 or at least 1");
  if (k < 0) k = m.max_model_len;
  for (auto& ids : r.prompts)
    if (static_cast<int64_t>(ids.size()) > k) ids.erase(ids.begin(), ids.end() - k);
  if (r.echo && m.tokenizer) {  // what is echoed is the prompt the model saw
    r.echo_texts.clear();
    for (const auto& ids : r.prompts) r.echo_texts.push_back(m.tokenizer->decode(ids, false));
  }
}

// Whether this chat request's output starts inside a <think> block, by the server's parser and
// the template switch the request sets (DeepSeek-V3.1's "thinking", Qwen3's "enable_thinking").
bool thinks(const json::object& o, ReasoningParser p) {
  if (p == ReasoningParser::none) return false;
  std::optional<bool> asked;
  if (const json::value* k = field(o, "chat_template_kwargs"); k && k->is_object())
    for (const char* key : {"thinking", "enable_thinking"})
      if (const json::value* v = field(k->as_object(), key); v && v->is_bool()) asked = v->as_bool();
  return asked.value_or(p == ReasoningParser::deepseek_r1);
}

// The output's structure, at most one: OpenAI's response_format, vLLM's guided_json,
// guided_choice, guided_regex, guided_grammar and structured_outputs, SGLang's json_schema, regex
// and ebnf. A schema, pattern or grammar is compiled here too, so that one the server cannot
// follow is a 400 naming the keyword (and, for a pattern, the offset; for a grammar, the line and
// column), not a failure at admission.
void parse_structure(const json::object& o, engine::SamplingParams& p) {
  const char* set_by = nullptr;
  auto set = [&](const char* name, engine::Structure st) {
    if (set_by) bad(name, fmt::format("'{}' and '{}' cannot be combined: give one output structure", set_by, name));
    set_by = name;
    p.structure = st;
  };
  auto schema = [&](const char* name, const json::value& v) {
    std::string text;
    if (v.is_string())  // the document as a string (SGLang's json_schema, vLLM's guided_json)
      text = v.as_string();
    else if (v.is_object() || v.is_bool())
      text = json::serialize(v);
    else
      bad(name, fmt::format("'{}' must be a JSON schema (an object, or its text)", name));
    try {
      engine::JsonSchema::compile_cached(text);
    } catch (const Error& e) {
      bad(name, fmt::format("'{}': {}", name, e.what()));
    }
    set(name, engine::Structure::json_schema);
    p.json_schema = std::move(text);
  };
  auto regex = [&](const char* name, const json::value& v) {
    if (!v.is_string()) bad(name, fmt::format("'{}' must be a regular expression (a string)", name));
    try {
      engine::Regex::compile_cached(v.as_string());
    } catch (const Error& e) {
      bad(name, fmt::format("'{}': {}", name, e.what()));
    }
    set(name, engine::Structure::regex);
    p.regex = std::string(v.as_string());
  };
  auto grammar = [&](const char* name, const json::value& v) {
    if (!v.is_string()) bad(name, fmt::format("'{}' must be a grammar (a string: GBNF, with a rule 'root')", name));
    try {
      engine::Grammar::compile_cached(v.as_string());
    } catch (const Error& e) {
      bad(name, fmt::format("'{}': {}", name, e.what()));
    }
    set(name, engine::Structure::grammar);
    p.grammar = std::string(v.as_string());
  };
  auto choices = [&](const char* name, const json::value& gc) {
    const std::string form = fmt::format("'{}' must be an array of 1 to 1024 non-empty strings", name);
    if (!gc.is_array() || gc.as_array().empty() || gc.as_array().size() > 1024) bad(name, form);
    std::size_t bytes = 0;
    for (const auto& c : gc.as_array()) {
      if (!c.is_string() || c.as_string().empty()) bad(name, form);
      bytes += c.as_string().size();
      p.choices.emplace_back(c.as_string());
    }
    if (bytes > 65536) bad(name, fmt::format("'{}' strings must total at most 64 KiB", name));
    std::sort(p.choices.begin(), p.choices.end());
    p.choices.erase(std::unique(p.choices.begin(), p.choices.end()), p.choices.end());
    set(name, engine::Structure::choice);
  };
  if (const json::value* rf = field(o, "response_format")) {
    const json::value* type = rf->is_object() ? rf->as_object().if_contains("type") : nullptr;
    if (!type || !type->is_string()) bad("response_format", "'response_format' must be an object with a string 'type'");
    const std::string t(type->as_string());
    if (t == "json_object") {
      set("response_format", engine::Structure::json_object);
    } else if (t == "json_schema") {
      const json::value* js = rf->as_object().if_contains("json_schema");
      const json::value* sch = js && js->is_object() ? js->as_object().if_contains("schema") : nullptr;
      if (!sch || sch->is_null())
        bad("response_format", "'response_format' of type 'json_schema' needs 'json_schema': {\"name\": ..., \"schema\": {...}}");
      schema("response_format", *sch);
    } else if (t == "grammar") {  // vLLM's {"type": "grammar", "grammar": "..."}
      const json::value* gr = rf->as_object().if_contains("grammar");
      if (!gr || gr->is_null()) bad("response_format", "'response_format' of type 'grammar' needs 'grammar': \"root ::= ...\"");
      grammar("response_format", *gr);
    } else if (t != "text") {
      bad("response_format", fmt::format("'response_format' of type '{}' is not supported by this server; send "
                                         "'json_schema', 'json_object', 'grammar', 'text' or leave it out", t));
    }
  }
  if (const json::value* v = field(o, "guided_json")) schema("guided_json", *v);
  if (const json::value* v = field(o, "guided_choice")) choices("guided_choice", *v);
  if (const json::value* v = field(o, "json_schema")) schema("json_schema", *v);
  if (const json::value* v = field(o, "guided_regex")) regex("guided_regex", *v);
  if (const json::value* v = field(o, "regex")) regex("regex", *v);  // SGLang's name
  if (const json::value* v = field(o, "guided_grammar")) grammar("guided_grammar", *v);
  if (const json::value* v = field(o, "ebnf")) grammar("ebnf", *v);  // SGLang's name
  if (const json::value* so = field(o, "structured_outputs")) {  // vLLM's newer form of the guided_* fields
    if (!so->is_object()) bad("structured_outputs", "'structured_outputs' must be an object");
    for (const auto& kv : so->as_object()) {
      const std::string key(kv.key());
      if (kv.value().is_null()) continue;
      if (key == "json") schema("structured_outputs", kv.value());
      else if (key == "choice") choices("structured_outputs", kv.value());
      else if (key == "regex") regex("structured_outputs", kv.value());
      else if (key == "grammar") grammar("structured_outputs", kv.value());
      else if (key == "json_object" && kv.value().is_bool()) {
        if (kv.value().as_bool()) set("structured_outputs", engine::Structure::json_object);
      } else
        bad("structured_outputs", fmt::format("'structured_outputs' '{}' is not supported by this server", key));
    }
  }
}

// vLLM's allowed_token_ids (the draws keep only these) and bad_words (each word, as written and
// after a space, tokenized: the last token of either is banned where the output ends with the
// others).
void parse_restrictions(const json::object& o, const ModelInfo& m, engine::SamplingParams& p) {
  if (const json::value* a = field(o, "allowed_token_ids")) {
    const std::string form = fmt::format("'allowed_token_ids' must be a non-empty array of token ids in [0, {})", m.vocab_size);
    if (!a->is_array() || a->as_array().empty() || static_cast<int64_t>(a->as_array().size()) > m.vocab_size)
      bad("allowed_token_ids", form);
    for (const auto& v : a->as_array()) {
      if (!v.is_int64() || v.as_int64() < 0 || v.as_int64() >= m.vocab_size) bad("allowed_token_ids", form);
      p.allowed_token_ids.push_back(static_cast<int32_t>(v.as_int64()));
    }
    std::sort(p.allowed_token_ids.begin(), p.allowed_token_ids.end());
    p.allowed_token_ids.erase(std::unique(p.allowed_token_ids.begin(), p.allowed_token_ids.end()), p.allowed_token_ids.end());
  }
  if (const json::value* b = field(o, "bad_words")) {
    const char* form = "'bad_words' must be an array of at most 1024 non-empty strings of at most 1 KiB";
    if (!b->is_array() || b->as_array().size() > 1024) bad("bad_words", form);
    for (const auto& v : b->as_array()) {
      if (!v.is_string()) bad("bad_words", form);
      std::string w(v.as_string());
      w.erase(0, std::min(w.find_first_not_of(" \t\n\r"), w.size()));
      if (w.empty() || w.size() > 1024) bad("bad_words", form);
      for (const std::string& text : {w, " " + w}) {
        std::vector<int32_t> ids = encode(m, text, false, "bad_words");
        if (!ids.empty() && std::find(p.bad_words.begin(), p.bad_words.end(), ids) == p.bad_words.end())
          p.bad_words.push_back(std::move(ids));
      }
    }
  }
}

}  // namespace

ParsedRequest parse_request(const json::value& body, Endpoint ep, const ModelInfo& m) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  const auto& o = body.as_object();
  ParsedRequest r;
  r.endpoint = ep;
  if (const json::value* mv = field(o, "model")) {
    if (!mv->is_string()) bad("model", "'model' must be a string");
    r.model = std::string(mv->as_string());
    if (!r.model.empty() && r.model != m.name)
      throw ApiError(404, fmt::format("The model `{}` does not exist.", r.model), "model");
  }
  auto& p = r.params;
  p.temperature = static_cast<float>(get_number(o, "temperature", 1.0, 0.0, 100.0));
  p.top_p = static_cast<float>(get_number(o, "top_p", 1.0, 1e-9, 1.0));
  p.top_k = static_cast<int32_t>(get_int(o, "top_k", -1, -1, 1 << 30));
  p.min_p = static_cast<float>(get_number(o, "min_p", 0.0, 0.0, 1.0));
  p.presence_penalty = static_cast<float>(get_number(o, "presence_penalty", 0.0, -2.0, 2.0));
  p.frequency_penalty = static_cast<float>(get_number(o, "frequency_penalty", 0.0, -2.0, 2.0));
  p.repetition_penalty = static_cast<float>(get_number(o, "repetition_penalty", 1.0, 1e-6, 100.0));
  if (field(o, "seed")) p.seed = static_cast<uint64_t>(get_int(o, "seed", 0, INT64_MIN, INT64_MAX));
  p.min_tokens = static_cast<int32_t>(get_int(o, "min_tokens", 0, 0, m.max_model_len));
  p.ignore_eos = get_bool(o, "ignore_eos", false);
  r.n = static_cast<int32_t>(get_int(o, "n", 1, 1, m.max_n));
  r.stream = get_bool(o, "stream", false);
  if (const json::value* so = field(o, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' needs 'stream': true");
    r.include_usage = get_bool(so->as_object(), "include_usage", false);
    r.continuous_usage_stats = get_bool(so->as_object(), "continuous_usage_stats", false);
  }
  r.return_tokens_as_token_ids = get_bool(o, "return_tokens_as_token_ids", false);
  r.skip_special_tokens = get_bool(o, "skip_special_tokens", true);
  r.include_stop_str_in_output = get_bool(o, "include_stop_str_in_output", false);
  r.data_parallel_rank = static_cast<int32_t>(get_int(o, "data_parallel_rank", -1, -1, 1 << 20));
  r.priority = static_cast<int32_t>(get_int(o, "priority", 0, INT32_MIN, INT32_MAX));
  // As vLLM: a priority the scheduler would not honour is refused rather than ignored.
  if (r.priority != 0 && !m.priority_scheduling)
    bad("priority", "'priority' needs priority scheduling: run with --scheduling-policy priority");
  if (const json::value* s = field(o, "stop")) {
    if (s->is_string()) {
      p.stop.emplace_back(s->as_string());
    } else if (s->is_array()) {
      for (const auto& e : s->as_array()) {
        if (!e.is_string()) bad("stop", "'stop' must be a string or an array of strings");
        p.stop.emplace_back(e.as_string());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const auto& st : p.stop) if (st.empty()) bad("stop", "'stop' strings must not be empty");
  }
  parse_structure(o, p);
  parse_restrictions(o, m, p);
  // Fields whose meaning this server does not implement: refused, not ignored, since ignoring
  // them would answer a different question than the one asked.
  if (const json::value* sfx = field(o, "suffix"))
    if (!sfx->is_string() || !sfx->as_string().empty()) bad("suffix", "'suffix' is not supported by this server");
  if (field(o, "best_of") && get_int(o, "best_of", 1, 1, 1 << 20) != r.n)
    bad("best_of", "'best_of' other than 'n' is not supported by this server");
  if (const json::value* b = field(o, "logit_bias")) {
    // {"token id": bias in [-100, 100]}, as OpenAI and vLLM take it.
    if (!b->is_object()) bad("logit_bias", "'logit_bias' must be an object of token ids to biases");
    std::map<int32_t, float> biases;
    for (const auto& kv : b->as_object()) {
      const std::string key(kv.key());
      int64_t t = -1;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), t);
      if (ec != std::errc() || end != key.data() + key.size() || key.empty())
        bad("logit_bias", fmt::format("'logit_bias' keys must be token ids, got \"{}\"", key));
      if (t < 0 || t >= m.vocab_size)
        bad("logit_bias", fmt::format("token id {} is out of vocabulary (size {})", t, m.vocab_size));
      const json::value& v = kv.value();
      if (!v.is_number()) bad("logit_bias", fmt::format("'logit_bias' value of token {} must be a number", t));
      const double bias = v.to_number<double>();
      if (!(bias >= -100.0 && bias <= 100.0))
        bad("logit_bias", fmt::format("'logit_bias' value of token {} must be in [-100, 100], got {}", t, bias));
      biases[static_cast<int32_t>(t)] = static_cast<float>(bias);
    }
    for (const auto& [t, bias] : biases) p.logit_bias.push_back({t, bias});
  }
  if (const json::value* s = field(o, "stop_token_ids")) {
    if (!s->is_array()) bad("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    p.stop_token_ids = token_array(s->as_array(), "stop_token_ids", m.vocab_size);
  }
  if (ep == Endpoint::completions) {
    r.echo = get_bool(o, "echo", false);
    parse_prompts(o, m, r);
    truncate_prompts(o, m, r);
    p.logprobs = static_cast<int32_t>(get_int(o, "logprobs", -1, 0, m.max_logprobs));
    // echo + logprobs: the logprobs cover the echoed prompt too (lm-eval's loglikelihood reads
    // them), as in OpenAI's legacy API and vLLM.
    if (r.echo && p.logprobs >= 0) p.prompt_logprobs = p.logprobs;
    // max_tokens 0 with echo: the prompt alone (scored, with logprobs); the engine still draws
    // one token, which is not shown.
    const int64_t mt = get_int(o, "max_tokens", 16, 0, m.max_model_len);
    if (mt == 0 && !r.echo) bad("max_tokens", "'max_tokens' must be at least 1 ('max_tokens': 0 needs 'echo': true)");
    r.prompt_only = mt == 0;
    p.max_tokens = static_cast<int32_t>(std::max<int64_t>(mt, 1));
  } else {
    parse_tools(o, m, r);
    parse_messages(o, m, r);
    truncate_prompts(o, m, r);
    // A constrained output is all JSON or a choice: no reasoning block to split off.
    r.reasoning_parser = thinks(o, m.reasoning_parser) && p.structure == engine::Structure::none
                             ? ReasoningParser::deepseek_r1
                             : ReasoningParser::none;
    r.include_reasoning = get_bool(o, "include_reasoning", true);
    r.chat_logprobs = get_bool(o, "logprobs", false);
    const int64_t top = get_int(o, "top_logprobs", 0, 0, m.max_logprobs);
    if (top > 0 && !r.chat_logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    p.logprobs = r.chat_logprobs ? static_cast<int32_t>(top) : -1;
    const int64_t room = std::max<int64_t>(1, m.max_model_len - static_cast<int64_t>(r.prompts[0].size()));
    int64_t mt = get_int(o, "max_completion_tokens", -1, 1, m.max_model_len);
    if (mt < 0) mt = get_int(o, "max_tokens", room, 1, m.max_model_len);
    p.max_tokens = static_cast<int32_t>(mt);
  }
  // vLLM's prompt_logprobs: each prompt token's logprob and rank, and the top k there.
  if (field(o, "prompt_logprobs")) {
    r.prompt_logprobs = static_cast<int32_t>(get_int(o, "prompt_logprobs", -1, 0, m.max_logprobs));
    if (r.stream) bad("prompt_logprobs", "'prompt_logprobs' is not available with 'stream'");
    p.prompt_logprobs = std::max(p.prompt_logprobs, r.prompt_logprobs);
  }
  if (p.min_tokens > (r.prompt_only ? 0 : p.max_tokens)) bad("min_tokens", "'min_tokens' must not exceed 'max_tokens'");
  if (p.restricted() && p.structure != engine::Structure::none)  // tool_choice's included
    bad(p.allowed_token_ids.empty() ? "bad_words" : "allowed_token_ids",
        "'allowed_token_ids' and 'bad_words' cannot be combined with an output structure");
  if (p.min_tokens > 0 && p.structure != engine::Structure::none)  // it would ban the end the structure reached
    bad("min_tokens", "'min_tokens' cannot be combined with 'response_format', 'guided_choice', 'guided_json', 'guided_regex' or "
                      "'guided_grammar': the structure decides where the output ends");
  for (const auto& ids : r.prompts)
    if (static_cast<int64_t>(ids.size()) + p.max_tokens > m.max_model_len)
      bad(ep == Endpoint::completions ? "prompt" : "messages",
          fmt::format("This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the "
                      "messages, {} in the completion). Please reduce the length of the messages or completion.",
                      m.max_model_len, ids.size() + p.max_tokens, ids.size(), p.max_tokens));
  return r;
}

}  // namespace dpa::serve

namespace dpa::serve {

ParsedRequest parse_native_request(const json::value& body, const ModelInfo& m) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  const auto& o = body.as_object();
  const json::value* text = field(o, "text");
  const json::value* ids = field(o, "input_ids");
  if (!text == !ids) bad(text ? "input_ids" : "text", "give exactly one of 'text' and 'input_ids'");
  json::object req;
  req["prompt"] = text ? *text : *ids;
  req["max_tokens"] = 128;  // SGLang's default max_new_tokens
  if (const json::value* sp = field(o, "sampling_params")) {
    if (!sp->is_object()) bad("sampling_params", "'sampling_params' must be an object (one for every prompt)");
    // SGLang's names, and what they are called in a completions request.
    static const std::pair<const char*, const char*> kRenamed[] = {
        {"max_new_tokens", "max_tokens"}, {"min_new_tokens", "min_tokens"}, {"no_stop_trim", "include_stop_str_in_output"},
        {"sampling_seed", "seed"}};
    static const char* const kSame[] = {"temperature", "top_p", "top_k", "min_p", "frequency_penalty",
                                        "presence_penalty", "repetition_penalty", "stop", "stop_token_ids",
                                        "ignore_eos", "skip_special_tokens", "n", "logit_bias", "json_schema",
                                        "regex", "ebnf"};
    static const char* const kIgnored[] = {"spaces_between_special_tokens"};
    for (const auto& kv : sp->as_object()) {
      const std::string key(kv.key());
      const auto renamed = std::find_if(std::begin(kRenamed), std::end(kRenamed), [&](auto& r) { return key == r.first; });
      if (renamed != std::end(kRenamed)) req[renamed->second] = kv.value();
      else if (std::find(std::begin(kSame), std::end(kSame), key) != std::end(kSame)) req[key] = kv.value();
      else if (std::find(std::begin(kIgnored), std::end(kIgnored), key) == std::end(kIgnored))
        bad("sampling_params", fmt::format("sampling_params '{}' is not supported by this server", key));
    }
  }
  const bool logprobs = get_bool(o, "return_logprob", false);
  const int64_t top = get_int(o, "top_logprobs_num", 0, 0, m.max_logprobs);
  const int64_t start = get_int(o, "logprob_start_len", -1, -1, m.max_model_len);
  if (logprobs) req["logprobs"] = top;
  for (const char* name : {"lora_path", "image_data", "input_embeds"})
    if (field(o, name)) bad(name, fmt::format("'{}' is not supported by this server", name));
  for (const char* name : {"stream", "data_parallel_rank", "routed_dp_rank", "model", "priority"})
    if (const json::value* v = field(o, name)) req[name] = *v;
  ParsedRequest r = parse_request(req, Endpoint::completions, m);
  r.native = true;
  if (logprobs) {
    r.native_logprobs = true;
    r.native_logprob_text = get_bool(o, "return_text_in_logprobs", false);
    r.native_logprob_start = static_cast<int32_t>(start);
    if (start >= 0) r.params.prompt_logprobs = std::max<int32_t>(r.params.prompt_logprobs, static_cast<int32_t>(top));
  }
  const bool batch = (text && text->is_array()) || (ids && ids->is_array() && !ids->as_array().empty() &&
                                                    ids->as_array()[0].is_array());
  r.native_list = batch || r.n > 1;
  if (const json::value* rid = field(o, "rid")) {
    if (rid->is_string()) {
      if (batch) bad("rid", "a batch needs one 'rid' a prompt");
      r.native_rids.emplace_back(rid->as_string());
    } else if (rid->is_array() && rid->as_array().size() == r.prompts.size()) {
      for (const auto& e : rid->as_array()) {
        if (!e.is_string()) bad("rid", "'rid' must be a string or a list of strings");
        r.native_rids.emplace_back(e.as_string());
      }
    } else {
      bad("rid", "'rid' must be a string, or a list of strings with one a prompt");
    }
  }
  return r;
}

}  // namespace dpa::serve
