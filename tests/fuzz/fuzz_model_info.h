// The served-model stand-in of the request harnesses (fuzz_http_request, fuzz_batch_line): the
// small GPT-2 tokenizer, the Qwen2.5 chat template and a 128-token context, so that context
// overflow is reachable. Built once per process.
#pragma once

#include <memory>

#include "fuzz_common.h"
#include "serve/openai_request.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace dpa::fuzz {

struct ModelFixture {
  std::unique_ptr<text::Tokenizer> tok;
  std::unique_ptr<text::ChatTemplate> tpl;
  serve::ModelInfo info;
  ModelFixture() {
    tok = text::Tokenizer::from_file(source_path("tests/text/corpus/tokenizer_gpt2_mini.json"));
    tpl = text::ChatTemplate::parse(read_source_file("tests/text/templates/qwen2_5.jinja"));
    info.name = "tiny";
    info.tokenizer = tok.get();
    info.chat_template = tpl.get();
    info.bos_token = info.eos_token = "<|endoftext|>";
    info.max_model_len = 128;
    info.vocab_size = tok->vocab_size();
    info.tool_parser = serve::ToolParser::deepseek;  // tools and tool_choice reach every branch
  }
};

inline const ModelFixture& model_fixture() {
  static const ModelFixture f;
  return f;
}

}  // namespace dpa::fuzz
