// Per-step trace of the lockstep engine, written as HDF5 by rank 0 (`bench --trace FILE.h5`):
// for every step that ran a forward, its start and wall time, and per world rank the tokens fed,
// the mode (0 idle, 1 decode, 2 prefill or mixed), running / waiting sequences and KV pages in
// use; with routed experts, the routed slots per expert per layer summed over ranks.
//
//   /step [S] i64, /started_s [S] f64 (steady clock, relative to the first step), /seconds [S] f64
//   /tokens, /mode, /running, /waiting, /kv_used_pages, /kv_total_pages [S, W] i64
//   /expert_tokens [S, n_layers, n_experts] i64 (only when the model routes experts)
//   root attributes: strings given to write() (model, layout, command)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace dpa::engine {

class StepTrace {
 public:
  explicit StepTrace(std::string path) : path_(std::move(path)) {}
  // Engine step observer (rank 0, engine thread).
  void record(const StepRecord& r);
  // Writes the file (replacing it); throws dpa::Error naming the path on failure.
  void write(const std::map<std::string, std::string>& attributes) const;
  int64_t n_steps() const { return static_cast<int64_t>(step_.size()); }

 private:
  std::string path_;
  int64_t world_ = 0, n_layers_ = 0, n_experts_ = 0;
  double t0_ = -1;
  std::vector<int64_t> step_;
  std::vector<double> started_, seconds_;
  std::vector<int64_t> tokens_, mode_, running_, waiting_, kv_used_, kv_total_;  // [S * W]
  std::vector<int64_t> experts_;                                                  // [S * layers * experts]
};

}  // namespace dpa::engine
