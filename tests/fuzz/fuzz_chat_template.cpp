// fuzz_chat_template: the Jinja-subset chat template engine.
//  mode 0: arbitrary template text, parsed and rendered with a fixed conversation.
//  mode 1: the Qwen2.5 template (tests/text/templates) rendered with arbitrary JSON as the
//          context's messages / tools (what a client controls through a chat request).
// dpa::Error (parse and render errors) is the documented outcome.
#include <boost/json.hpp>

#include <memory>

#include "fuzz_common.h"
#include "text/chat_template.h"

namespace {
using namespace dpa;
namespace json = boost::json;

json::object fixed_context() {
  return json::parse(R"({"messages":[{"role":"system","content":"You are helpful."},
    {"role":"user","content":"Hello!"},{"role":"assistant","content":"Hi there."},
    {"role":"user","content":"What is 2+2?"}],
    "add_generation_prompt":true,"bos_token":"<s>","eos_token":"</s>"})")
      .as_object();
}

const text::ChatTemplate& qwen() {
  static std::unique_ptr<text::ChatTemplate> t =
      text::ChatTemplate::parse(fuzz::read_source_file("tests/text/templates/qwen2_5.jinja"));
  return *t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 4096) return 0;
  static const json::object ctx = fixed_context();
  const std::string s(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    boost::system::error_code ec;
    json::value v = json::parse(s, ec);
    if (ec) return 0;
    json::object c = ctx;
    if (v.is_object()) {
      for (const auto& kv : v.as_object()) c[kv.key()] = kv.value();
    } else {
      c["messages"] = v;
    }
    fuzz::expect_clean([&] { (void)qwen().render(c); });
  } else {
    fuzz::expect_clean([&] {
      auto t = text::ChatTemplate::parse(s);
      (void)t->render(ctx);
    });
  }
  return 0;
}
