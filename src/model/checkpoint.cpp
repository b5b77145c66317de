// The safetensors Checkpoint: config.json, the shard index, each shard's mapping, and row reads
// with dtype conversion. FP8 E4M3 weights are dequantized at load, in read_rows, with their
// 128x128 `_scale_inv` blocks; the rest of the program sees only f32/bf16/f16.
#include "model/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"
#include "model/safetensors.h"

namespace dpa::model {
namespace {

namespace json = boost::json;

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open '{}'", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json::object parse_object(const std::string& path) {
  boost::system::error_code ec;
  json::value v = json::parse(read_text(path), ec);
  if (ec) throw Error(fmt::format("{}: invalid JSON: {}", path, ec.message()));
  if (!v.is_object()) throw Error(fmt::format("{}: expected a JSON object", path));
  return std::move(v.get_object());
}

// True for "model.layers.{i}.*" with i >= n_layers: the MTP layers of V3, which we do not run.
bool is_extra_layer(const std::string& name, int64_t n_layers) {
  static constexpr std::string_view prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  int64_t i = 0;
  std::size_t p = prefix.size(), digits = 0;
  for (; p < name.size() && name[p] >= '0' && name[p] <= '9' && digits < 12; ++p, ++digits)
    i = i * 10 + (name[p] - '0');
  return digits > 0 && p < name.size() && name[p] == '.' && i >= n_layers;
}

// Element `i` of `src` (dtype `t`) as f32; memcpy because mapped data may be unaligned.
inline float load_f32(const uint8_t* src, DType t, std::size_t i) {
  switch (t) {
    case DType::f32: {
      float f;
      std::memcpy(&f, src + 4 * i, 4);
      return f;
    }
    case DType::bf16: {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      return bf16_to_f32(h);
    }
    case DType::f16: {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      return f16_to_f32(h);
    }
    case DType::f8_e4m3: return f8e4m3_to_f32(src[i]);
    default: return 0.0f;
  }
}

inline void store(void* dst, DType out, std::size_t i, float v) {
  auto* d = static_cast<uint8_t*>(dst);
  if (out == DType::f32) {
    std::memcpy(d + 4 * i, &v, 4);
  } else {
    const uint16_t h = out == DType::bf16 ? f32_to_bf16(v) : f32_to_f16(v);
    std::memcpy(d + 2 * i, &h, 2);
  }
}

// n elements from index `first` of `src` (dtype In) to `dst` (dtype out); the input dtype is a
// template argument so the per-element loop has no dtype switch.
template <DType In>
void convert(const uint8_t* src, std::size_t first, std::size_t n, DType out, void* dst) {
  if (out == DType::f32) {
    for (std::size_t i = 0; i < n; ++i) store(dst, DType::f32, i, load_f32(src, In, first + i));
  } else if (out == DType::bf16) {
    for (std::size_t i = 0; i < n; ++i) store(dst, DType::bf16, i, load_f32(src, In, first + i));
  } else {
    for (std::size_t i = 0; i < n; ++i) store(dst, DType::f16, i, load_f32(src, In, first + i));
  }
}

struct Files {
  std::string config, index, tokenizer, tokenizer_config, generation_config;
};

class SafetensorsCheckpoint final : public Checkpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
    files_.config = dir + "/config.json";
    if (!is_file(files_.config)) throw Error(fmt::format("no config.json in '{}'", dir));
    config_ = load_model_config(files_.config);
    for (auto [field, name] : {std::pair{&files_.tokenizer, "tokenizer.json"},
                               std::pair{&files_.tokenizer_config, "tokenizer_config.json"},
                               std::pair{&files_.generation_config, "generation_config.json"}})
      if (is_file(dir + "/" + name)) *field = dir + "/" + name;
    if (!files_.generation_config.empty()) apply_generation_config(files_.generation_config);

    const std::string index = dir + "/model.safetensors.index.json";
    const std::string single = dir + "/model.safetensors";
    if (is_file(index)) {
      files_.index = index;
      open_index(index);
    } else if (is_file(single)) {
      add_shard(single);
    } else {
      throw Error(fmt::format("no model.safetensors or model.safetensors.index.json in '{}'", dir));
    }
  }

  const ModelConfig& config() const override { return config_; }
  const std::string& dir() const override { return dir_; }
  bool contains(const std::string& name) const override { return tensors_.count(name) > 0; }
  const TensorInfo& info(const std::string& name) const override { return entry(name).info; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }
  const void* mapped(const std::string& name) const override {
    const Entry& e = entry(name);
    return e.shard->data() + e.info.offset;
  }
  const std::string& tokenizer_path() const override { return files_.tokenizer; }
  const std::string& tokenizer_config_path() const override { return files_.tokenizer_config; }
  const std::string& generation_config_path() const override { return files_.generation_config; }

  void read_rows(const std::string& name, DType out, void* dst, int64_t row_begin,
                 int64_t row_end) const override {
    const Entry& e = entry(name);
    const TensorInfo& t = e.info;
    if (out != DType::f32 && out != DType::bf16 && out != DType::f16)
      throw Error(fmt::format("read_rows '{}': output dtype {} is not f32, bf16 or f16", name, dtype_name(out)));
    const int64_t rows = t.shape.empty() ? 1 : t.shape[0];
    const int64_t cols = rows > 0 ? t.numel() / rows : 0;
    if (row_end < 0) row_end = rows;
    if (row_begin < 0 || row_begin > row_end || row_end > rows)
      throw Error(fmt::format("read_rows '{}' in {}: rows [{}, {}) outside [0, {})", name, t.file, row_begin,
                              row_end, rows));
    const std::size_t n = static_cast<std::size_t>((row_end - row_begin) * cols);
    const std::size_t first = static_cast<std::size_t>(row_begin * cols);
    const uint8_t* src = e.shard->data() + t.offset;
    switch (t.dtype) {
      case DType::f32:
      case DType::bf16:
      case DType::f16:
        if (n == 0) return;
        if (t.dtype == out) {
          std::memcpy(dst, src + first * dtype_size(out), n * dtype_size(out));
        } else if (t.dtype == DType::f32) {
          convert<DType::f32>(src, first, n, out, dst);
        } else if (t.dtype == DType::bf16) {
          convert<DType::bf16>(src, first, n, out, dst);
        } else {
          convert<DType::f16>(src, first, n, out, dst);
        }
        return;
      case DType::f8_e4m3: read_fp8(e, out, dst, row_begin, row_end, rows, cols); return;
      default:
        throw Error(fmt::format("read_rows '{}' in {}: cannot convert {} to {}", name, t.file,
                                dtype_name(t.dtype), dtype_name(out)));
    }
  }

 private:
  struct Entry {
    TensorInfo info;
    const SafetensorsFile* shard = nullptr;
  };

  const Entry& entry(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(fmt::format("missing tensor {} in {}", name, dir_));
    return it->second;
  }

  // W[r, c] = fp8[r, c] * scale_inv[r / bn, c / bk] (block sizes from quantization_config).
  void read_fp8(const Entry& e, DType out, void* dst, int64_t row_begin, int64_t row_end, int64_t rows,
                int64_t cols) const {
    const TensorInfo& t = e.info;
    const std::string scale_name = t.name + "_scale_inv";
    if (t.shape.size() != 2)
      throw Error(fmt::format("{}: fp8 tensor '{}' is not 2-D", t.file, t.name));
    if (!contains(scale_name))
      throw Error(fmt::format("{}: fp8 tensor '{}' has no '{}'", t.file, t.name, scale_name));
    const Entry& s = entry(scale_name);
    const int64_t bn = config_.weight_block_n, bk = config_.weight_block_k;
    const int64_t srows = (rows + bn - 1) / bn, scols = (cols + bk - 1) / bk;
    if (s.info.shape != std::vector<int64_t>{srows, scols} ||
        (s.info.dtype != DType::f32 && s.info.dtype != DType::bf16))
      throw Error(fmt::format("{}: scale '{}' must be f32 or bf16 [{}, {}] for '{}' [{}, {}]", s.info.file, scale_name, srows,
                              scols, t.name, rows, cols));
    const uint8_t* src = e.shard->data() + t.offset;
    const uint8_t* scale = s.shard->data() + s.info.offset;
    std::size_t o = 0;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const std::size_t srow = static_cast<std::size_t>((r / bn) * scols);
      for (int64_t c = 0; c < cols; ++c, ++o) {
        const float w = f8e4m3_to_f32(src[static_cast<std::size_t>(r * cols + c)]);
        store(dst, out, o, w * load_f32(scale, s.info.dtype, srow + static_cast<std::size_t>(c / bk)));
      }
    }
  }

  const SafetensorsFile& add_shard(const std::string& path) {
    shards_.push_back(std::make_unique<SafetensorsFile>(path));
    const SafetensorsFile& f = *shards_.back();
    for (const TensorInfo& t : f.tensors()) {
      if (is_extra_layer(t.name, config_.num_hidden_layers)) continue;
      auto [it, inserted] = tensors_.try_emplace(t.name, Entry{t, &f});
      if (!inserted)
        throw Error(fmt::format("tensor '{}' appears in both {} and {}", t.name, it->second.info.file, path));
    }
    return f;
  }

  void open_index(const std::string& index) {
    const json::object root = parse_object(index);
    const json::value* wm = root.if_contains("weight_map");
    if (!wm || !wm->is_object()) throw Error(fmt::format("{}: 'weight_map' missing or not an object", index));
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& kv : wm->get_object()) {
      const std::string name(kv.key());
      if (!kv.value().is_string())
        throw Error(fmt::format("{}: weight_map entry '{}' is not a string", index, name));
      const std::string shard(kv.value().get_string());
      // Shards live beside the index; a path elsewhere would let a checkpoint read any file.
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw Error(fmt::format("{}: tensor '{}' names an invalid shard '{}'", index, name, shard));
      by_shard[shard].push_back(name);
    }
    for (const auto& [shard, names] : by_shard) {
      const std::string path = dir_ + "/" + shard;
      if (!is_file(path))
        throw Error(fmt::format("{}: shard '{}' (tensor '{}') does not exist", index, shard, names.front()));
      const SafetensorsFile& f = add_shard(path);
      std::set<std::string> present;
      for (const auto& t : f.tensors()) present.insert(t.name);
      for (const auto& n : names)
        if (!present.count(n))
          throw Error(fmt::format("{}: tensor '{}' is not in its shard {}", index, n, path));
    }
  }

  // generation_config.json's eos/bos win over config.json's, as in transformers' generate().
  void apply_generation_config(const std::string& path) {
    const json::object g = parse_object(path);
    auto as_id = [&](const char* field, const json::value& v) {
      if (!v.is_int64() || v.get_int64() < 0)
        throw Error(fmt::format("{}: field '{}': expected a non-negative integer or a list of them", path, field));
      return v.get_int64();
    };
    if (const json::value* e = g.if_contains("eos_token_id"); e && !e->is_null()) {
      std::vector<int64_t> ids;
      if (e->is_array()) {
        for (const auto& x : e->get_array()) ids.push_back(as_id("eos_token_id", x));
      } else {
        ids.push_back(as_id("eos_token_id", *e));
      }
      config_.eos_token_ids = ids;
    }
    if (const json::value* b = g.if_contains("bos_token_id"); b && !b->is_null())
      config_.bos_token_id = as_id("bos_token_id", *b);
  }

  std::string dir_;
  Files files_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, Entry> tensors_;
};

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir) {
  return std::make_unique<SafetensorsCheckpoint>(dir);
}

std::vector<float> Checkpoint::read_f32(const std::string& name) const {
  std::vector<float> out(static_cast<std::size_t>(info(name).numel()));
  read_rows(name, DType::f32, out.data());
  return out;
}

namespace {
const std::string& no_path() {
  static const std::string none;
  return none;
}
}  // namespace

const std::string& Checkpoint::tokenizer_path() const { return no_path(); }
const std::string& Checkpoint::tokenizer_config_path() const { return no_path(); }
const std::string& Checkpoint::generation_config_path() const { return no_path(); }

}  // namespace dpa::model
