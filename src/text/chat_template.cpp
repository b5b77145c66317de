// ChatTemplate: parses once, renders many times with the Jinja subset interpreter.
#include "text/chat_template.h"

#include "text/jinja_eval.h"
#include "text/jinja_parser.h"

namespace dpa::text {

namespace {

class JinjaChatTemplate : public ChatTemplate {
 public:
  explicit JinjaChatTemplate(jinja::Body body) : body_(std::move(body)) {}
  std::string render(const boost::json::object& context) const override {
    return jinja::render(body_, context);
  }

 private:
  jinja::Body body_;
};

}  // namespace

std::unique_ptr<ChatTemplate> ChatTemplate::parse(const std::string& source) {
  return std::make_unique<JinjaChatTemplate>(jinja::parse_template(source));
}

}  // namespace dpa::text
