// Chat templates: an interpreter for the subset of Jinja2 that Hugging Face `chat_template`s use
// (DeepSeek-V2/V3/R1, Qwen2/3, Llama 3, Mistral): output, {% if/elif/else %}, {% for %} with
// loop.*, {% set %} (also namespace() attributes), filters, tests, string methods, and
// raise_exception(). Data is Boost.JSON values.
#pragma once

#include <boost/json.hpp>
#include <memory>
#include <string>

namespace dpa::text {

class ChatTemplate {
 public:
  // Throws dpa::Error with line/column on a syntax error.
  static std::unique_ptr<ChatTemplate> parse(const std::string& source);
  virtual ~ChatTemplate() = default;
  // Renders with the variables of `context` (messages, add_generation_prompt, bos_token, ...).
  // Throws dpa::Error on raise_exception() or a runtime error.
  virtual std::string render(const boost::json::object& context) const = 0;
};

}  // namespace dpa::text
