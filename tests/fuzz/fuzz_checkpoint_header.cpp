// fuzz_checkpoint_header: the checkpoint reader's parsers of untrusted files.
//  mode 0: the bytes as a whole .safetensors file (8-byte header length, JSON header, data),
//          opened with model::SafetensorsFile from an in-memory file (memfd).
//  mode 1: the bytes as config.json text through model::parse_model_config (+ validate).
// dpa::Error is the documented outcome.
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "fuzz_common.h"
#include "model/config.h"
#include "model/safetensors.h"

using namespace dpa;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > (1 << 16)) return 0;
  const uint8_t mode = data[0];
  ++data, --size;
  if (mode & 1) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    fuzz::expect_clean([&] {
      model::ModelConfig c = model::parse_model_config(text, "config.json");
      c.validate("config.json");
      (void)c.softmax_scale();
      for (int64_t l = 0; l < std::min<int64_t>(c.num_hidden_layers, 64); ++l) (void)c.is_moe_layer(l);
    });
    return 0;
  }
  static int fd = -1;
  if (fd < 0) fd = memfd_create("fuzz.safetensors", 0);
  if (fd < 0) __builtin_trap();
  if (ftruncate(fd, 0) != 0) __builtin_trap();
  size_t off = 0;
  while (off < size) {
    const ssize_t n = pwrite(fd, data + off, size - off, static_cast<off_t>(off));
    if (n <= 0) __builtin_trap();
    off += static_cast<size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  fuzz::expect_clean([&] {
    model::SafetensorsFile f(path);
    // Every tensor the reader accepted must lie inside the data section.
    for (const auto& t : f.tensors()) {
      (void)t.numel();
      if (t.offset > f.data_size() || t.nbytes > f.data_size() - t.offset) __builtin_trap();
      if (t.nbytes > 0) {
        volatile uint8_t first = f.data()[t.offset], last = f.data()[t.offset + t.nbytes - 1];
        (void)first, (void)last;
      }
    }
    (void)f.data_size();
  });
  return 0;
}
