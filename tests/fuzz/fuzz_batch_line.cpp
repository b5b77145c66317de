// fuzz_batch_line: the batch runner's parsers of untrusted lines.
//  mode 0: one input JSONL line validated as BatchRunner::submit_line does before it submits
//          (JSON object, string custom_id, method POST, url, object body, serve::parse_request).
//          submit_line itself is private and submits to a live engine, so its validation steps
//          are mirrored here step by step; parse_request is the shared code under test.
//  mode 1: the bytes as an output file that --resume scans (serve::scan_batch_output), from an
//          in-memory file (memfd); dpa::Error (a corrupt non-last line) is the documented outcome.
#include <sys/mman.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <memory>

#include "fuzz_common.h"
#include "fuzz_model_info.h"
#include "serve/batch.h"
#include "serve/openai_request.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {
using namespace dpa;
namespace json = boost::json;

void line(const std::string& text) {
  const auto& f = fuzz::model_fixture();
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return;
  const auto& o = v.as_object();
  const json::value* cid = o.if_contains("custom_id");
  if (!cid || !cid->is_string()) {
    (void)json::parse(cid ? json::serialize(*cid) : "null");  // error_line re-parses it
    return;
  }
  const json::value* url = o.if_contains("url");
  const json::value* body = o.if_contains("body");
  const json::value* method = o.if_contains("method");
  if (method && (!method->is_string() || method->as_string() != "POST")) return;
  serve::Endpoint ep;
  if (url && url->is_string() && url->as_string() == "/v1/completions") ep = serve::Endpoint::completions;
  else if (url && url->is_string() && url->as_string() == "/v1/chat/completions") ep = serve::Endpoint::chat;
  else return;
  if (!body || !body->is_object()) return;
  try {
    serve::ParsedRequest r = serve::parse_request(*body, ep, f.info);
    if (r.prompts.empty() || r.n < 1) __builtin_trap();
  } catch (const serve::ApiError& e) {
    (void)json::serialize(e.body());
  }
}

void scan(const uint8_t* data, size_t size) {
  static int fd = -1;
  if (fd < 0) fd = memfd_create("fuzz.jsonl", 0);
  if (fd < 0 || ftruncate(fd, 0) != 0) __builtin_trap();
  size_t off = 0;
  while (off < size) {
    const ssize_t n = pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (n <= 0) __builtin_trap();
    off += static_cast<size_t>(n);
  }
  fuzz::expect_clean([&] {
    auto [ids, good] = serve::scan_batch_output("/proc/self/fd/" + std::to_string(fd));
    if (good > size) __builtin_trap();
    (void)ids;
  });
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 16)) return 0;
  const uint8_t mode = data[0];
  if (mode & 1) scan(data + 1, size - 1);
  else line(std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  return 0;
}
