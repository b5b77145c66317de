// fuzz_batch_line: the batch runner's parsers of untrusted lines.
//  mode 0: one input JSONL line read as BatchRunner::submit_line reads it before it submits
//          (serve::read_batch_line); an error line it writes must be JSON that --resume reads.
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
  serve::ReadLine r = serve::read_batch_line(7, text, f.info);
  if (r.error_line.empty()) {
    if (r.req.prompts.empty() || r.req.n < 1) __builtin_trap();
    return;
  }
  // What the runner writes for a bad line must read back on --resume: one JSON object with a
  // custom_id, on one line.
  if (r.error_line.find('\n') != std::string::npos) __builtin_trap();
  boost::system::error_code ec;
  json::value v = json::parse(r.error_line, ec);
  if (ec || !v.is_object() || !v.as_object().contains("custom_id")) __builtin_trap();
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
    const serve::BatchOutputScan s = serve::scan_batch_output("/proc/self/fd/" + std::to_string(fd));
    if (s.good_bytes > size) __builtin_trap();
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
