// Reader of Hugging Face safetensors checkpoints: one `model.safetensors` or shards named by
// `model.safetensors.index.json`. Files are memory-mapped and only the bytes a rank asks for are
// touched, so each rank reads just its experts and heads. Checkpoints are hostile input: every
// inconsistency throws dpa::Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace dpa::model {

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  std::string file;     // shard path
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class Checkpoint {
 public:
  // Opens DIR: config.json, the index (if any) and every shard's header. Throws dpa::Error.
  static std::unique_ptr<Checkpoint> open(const std::string& dir);
  virtual ~Checkpoint() = default;

  virtual const ModelConfig& config() const = 0;
  virtual const std::string& dir() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  // Throws dpa::Error "missing tensor NAME in DIR" when absent.
  virtual const TensorInfo& info(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;

  // Copies rows [row_begin, row_end) along dim 0 (row_end -1: to the end) into `dst`, converted
  // to `out` (f32, bf16 or f16). FP8 weights are dequantized with their `_scale_inv` blocks.
  virtual void read_rows(const std::string& name, DType out, void* dst, int64_t row_begin = 0,
                         int64_t row_end = -1) const = 0;
  // The tensor's bytes as stored (dtype info(name).dtype), inside the memory mapping: valid while
  // the Checkpoint lives. Lets the CPU backend use bf16 weights in place, without copies.
  virtual const void* mapped(const std::string& name) const = 0;
  // Optional files beside the weights: full path, or "" when the checkpoint has none. Eos and bos
  // ids of generation_config.json already override config.json's in config().
  virtual const std::string& tokenizer_path() const;
  virtual const std::string& tokenizer_config_path() const;
  virtual const std::string& generation_config_path() const;
  // Whole tensor as f32 (convenience for the CPU reference).
  std::vector<float> read_f32(const std::string& name) const;
};

}  // namespace dpa::model
