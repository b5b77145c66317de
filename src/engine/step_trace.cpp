// HDF5 writer of the per-step trace (C API of the HDF5 library; rank 0 alone opens the file).
#include "engine/step_trace.h"

#include <hdf5.h>

#include <fmt/format.h>

#include "core/error.h"

namespace dpa::engine {

void StepTrace::record(const StepRecord& r) {
  const auto& hs = *r.headers;
  if (world_ == 0) world_ = static_cast<int64_t>(hs.size());
  if (t0_ < 0) t0_ = r.started_s;
  step_.push_back(r.step);
  started_.push_back(r.started_s - t0_);
  seconds_.push_back(r.seconds);
  for (const auto& h : hs) {
    tokens_.push_back(h.n_tokens);
    mode_.push_back(h.mode);
    running_.push_back(h.n_running);
    waiting_.push_back(h.n_waiting);
    kv_used_.push_back(h.total_blocks - h.free_blocks);
    kv_total_.push_back(h.total_blocks);
  }
  if (r.n_layers > 0 && r.n_experts > 0 && r.expert_tokens) {
    if (n_layers_ == 0) n_layers_ = r.n_layers, n_experts_ = r.n_experts;
    experts_.insert(experts_.end(), r.expert_tokens->begin(), r.expert_tokens->end());
  }
}

namespace {

// Owns an HDF5 handle; closes it with the matching function.
struct H5Handle {
  hid_t id;
  herr_t (*close)(hid_t);
  ~H5Handle() {
    if (id >= 0) close(id);
  }
};

void check(herr_t rc, const std::string& path, const char* what) {
  if (rc < 0) throw Error(fmt::format("trace {}: HDF5 could not {}", path, what));
}

template <typename T>
void dataset(hid_t file, const std::string& path, const char* name, const std::vector<T>& data,
             std::vector<hsize_t> dims) {
  const hid_t type = std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
  H5Handle space{H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose};
  if (space.id < 0) throw Error(fmt::format("trace {}: HDF5 could not make a dataspace for {}", path, name));
  H5Handle ds{H5Dcreate2(file, name, type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose};
  if (ds.id < 0) throw Error(fmt::format("trace {}: HDF5 could not create dataset {}", path, name));
  if (!data.empty()) check(H5Dwrite(ds.id, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()), path, name);
}

void string_attribute(hid_t obj, const std::string& path, const std::string& key, const std::string& value) {
  H5Handle type{H5Tcopy(H5T_C_S1), H5Tclose};
  check(H5Tset_size(type.id, value.empty() ? 1 : value.size()), path, "size a string");
  H5Handle space{H5Screate(H5S_SCALAR), H5Sclose};
  H5Handle attr{H5Acreate2(obj, key.c_str(), type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  if (attr.id < 0) throw Error(fmt::format("trace {}: HDF5 could not create attribute {}", path, key));
  check(H5Awrite(attr.id, type.id, value.empty() ? "" : value.c_str()), path, "write an attribute");
}

}  // namespace

void StepTrace::write(const std::map<std::string, std::string>& attributes) const {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as one dpa::Error
  H5Handle file{H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) throw Error(fmt::format("trace {}: cannot create the HDF5 file", path_));
  const hsize_t S = step_.size(), W = static_cast<hsize_t>(world_);
  dataset(file.id, path_, "step", step_, {S});
  dataset(file.id, path_, "started_s", started_, {S});
  dataset(file.id, path_, "seconds", seconds_, {S});
  dataset(file.id, path_, "tokens", tokens_, {S, W});
  dataset(file.id, path_, "mode", mode_, {S, W});
  dataset(file.id, path_, "running", running_, {S, W});
  dataset(file.id, path_, "waiting", waiting_, {S, W});
  dataset(file.id, path_, "kv_used_pages", kv_used_, {S, W});
  dataset(file.id, path_, "kv_total_pages", kv_total_, {S, W});
  if (n_layers_ > 0)
    dataset(file.id, path_, "expert_tokens", experts_,
            {S, static_cast<hsize_t>(n_layers_), static_cast<hsize_t>(n_experts_)});
  for (const auto& [k, v] : attributes) string_attribute(file.id, path_, k, v);
}

}  // namespace dpa::engine
