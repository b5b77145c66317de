// Safetensors mapping, header validation and header writing.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"

namespace dpa::model {
namespace {

namespace json = boost::json;

// A non-negative JSON integer, or -1.
int64_t non_negative_int(const json::value& v) {
  if (v.is_int64()) return v.get_int64() >= 0 ? v.get_int64() : -1;
  return -1;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  auto fail = [&](const std::string& what) { throw Error(fmt::format("{}: {}", path, what)); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  file_size_ = static_cast<uint64_t>(st.st_size);
  if (file_size_ < 8) {
    ::close(fd);
    fail(fmt::format("{} bytes: too short for a safetensors header", file_size_));
  }
  void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) fail(fmt::format("mmap failed: {}", std::strerror(errno)));
  base_ = static_cast<const uint8_t*>(p);
  try {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | base_[i];
    if (n > kMaxSafetensorsHeader) fail(fmt::format("header length {} exceeds the {} byte limit", n, kMaxSafetensorsHeader));
    if (n > file_size_ - 8) fail(fmt::format("header length {} runs past the end of the {} byte file", n, file_size_));
    data_begin_ = 8 + n;
    const uint64_t data_size = file_size_ - data_begin_;
    boost::system::error_code ec;
    json::value root = json::parse(std::string_view(reinterpret_cast<const char*>(base_ + 8), n), ec);
    if (ec) fail(fmt::format("header is not valid JSON: {}", ec.message()));
    if (!root.is_object()) fail("header is not a JSON object");
    for (const auto& kv : root.get_object()) {
      const std::string name(kv.key());
      if (name == "__metadata__") {
        if (!kv.value().is_object()) fail("__metadata__ is not an object");
        for (const auto& m : kv.value().get_object()) {
          if (!m.value().is_string()) fail(fmt::format("__metadata__ value '{}' is not a string", std::string(m.key())));
          metadata_[std::string(m.key())] = std::string(m.value().get_string());
        }
        continue;
      }
      auto bad = [&](const std::string& what) { fail(fmt::format("tensor '{}': {}", name, what)); };
      if (!kv.value().is_object()) bad("entry is not an object");
      const json::object& e = kv.value().get_object();
      TensorInfo t;
      t.name = name;
      t.file = path;
      const json::value* dt = e.if_contains("dtype");
      if (!dt || !dt->is_string()) bad("dtype missing or not a string");
      if (!parse_dtype(std::string_view(dt->get_string()), &t.dtype))
        bad(fmt::format("unknown dtype '{}'", std::string_view(dt->get_string())));
      const json::value* sh = e.if_contains("shape");
      if (!sh || !sh->is_array()) bad("shape missing or not an array");
      if (sh->get_array().size() > 8) bad("more than 8 dimensions");
      int64_t numel = 1;
      for (const auto& d : sh->get_array()) {
        const int64_t dim = non_negative_int(d);
        if (dim < 0) bad("shape has a negative or non-integer dimension");
        t.shape.push_back(dim);
        if (__builtin_mul_overflow(numel, dim, &numel)) bad("shape overflows when multiplied");
      }
      int64_t bytes = 0;
      if (__builtin_mul_overflow(numel, static_cast<int64_t>(dtype_size(t.dtype)), &bytes))
        bad("byte size overflows");
      const json::value* off = e.if_contains("data_offsets");
      if (!off || !off->is_array() || off->get_array().size() != 2)
        bad("data_offsets missing or not [begin, end]");
      const int64_t begin = non_negative_int(off->get_array()[0]);
      const int64_t end = non_negative_int(off->get_array()[1]);
      if (begin < 0 || end < 0) bad("data_offsets are not non-negative integers");
      if (begin > end) bad(fmt::format("data_offsets begin {} > end {}", begin, end));
      if (static_cast<uint64_t>(end) > data_size)
        bad(fmt::format("data_offsets end {} past the data section of {} bytes", end, data_size));
      if (end - begin != bytes)
        bad(fmt::format("{} dtype {} x {} elements = {} bytes but data_offsets span {}", dtype_name(t.dtype),
                        dtype_size(t.dtype), numel, bytes, end - begin));
      t.offset = static_cast<uint64_t>(begin);
      t.nbytes = static_cast<uint64_t>(bytes);
      tensors_.push_back(std::move(t));
    }
    std::vector<const TensorInfo*> order;
    for (const auto& t : tensors_)
      if (t.nbytes > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i]->offset < order[i - 1]->offset + order[i - 1]->nbytes)
        fail(fmt::format("tensor '{}' overlaps tensor '{}'", order[i]->name, order[i - 1]->name));
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), file_size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), file_size_);
}

std::string make_safetensors_header(std::vector<TensorInfo>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  json::object root;
  if (!metadata.empty()) {
    json::object m;
    for (const auto& [k, v] : metadata) m[k] = v;
    root["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (auto& t : tensors) {
    int64_t n = t.numel();
    t.offset = offset;
    t.nbytes = static_cast<uint64_t>(n) * dtype_size(t.dtype);
    offset += t.nbytes;
    json::array shape;
    for (int64_t d : t.shape) shape.push_back(d);
    static constexpr const char* names[] = {"F32", "F16", "BF16", "F64", "I32", "I64", "U8", "I8", "F8_E4M3"};
    json::object e;
    e["dtype"] = names[static_cast<int>(t.dtype)];
    e["shape"] = std::move(shape);
    e["data_offsets"] = json::array{t.offset, t.offset + t.nbytes};
    root[t.name] = std::move(e);
  }
  std::string text = json::serialize(root);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace dpa::model
