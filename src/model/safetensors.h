// One safetensors file: a read-only memory mapping whose header is checked as hostile input, and
// the header writer used by make-model. Layout: 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data
// section that the offsets index.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/checkpoint.h"

namespace dpa::model {

// Largest header accepted: real ones are a few MB even for 671B checkpoints.
inline constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

class SafetensorsFile {
 public:
  // Maps `path` and checks every header entry (dtype known, dims non-negative and not overflowing,
  // bytes = numel * dtype size, offsets inside the data section, no two tensors overlapping).
  // Throws dpa::Error naming the file and the tensor.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Entries in header order; `file` is this path, `offset` is from the start of the data section.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Start of the data section inside the mapping (alignment not guaranteed: read with memcpy).
  const uint8_t* data() const { return base_ + data_begin_; }
  uint64_t data_size() const { return file_size_ - data_begin_; }

 private:
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t file_size_ = 0, data_begin_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Header bytes (length prefix + JSON padded with spaces to a multiple of 8, so the data section
// is 8-byte aligned) for `tensors` laid out back to back in the given order; fills each entry's
// `offset` and `nbytes`.
std::string make_safetensors_header(std::vector<TensorInfo>& tensors,
                                    const std::map<std::string, std::string>& metadata);

}  // namespace dpa::model
