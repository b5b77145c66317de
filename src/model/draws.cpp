// A step's draws and expert counts on their way to the host: launch() / collect() and the folding
// of the counts kept in backend memory.
#include <cstring>

#include "core/error.h"
#include "model/forward.h"

namespace dpa::model {

const std::vector<int64_t>& Model::expert_counts() const {
  if (counts_on_device_) {
    const ModelConfig& c = config();
    const int64_t stride = c.n_routed_experts + shared_pieces_, ks_all = c.num_experts_per_tok + shared_pieces_;
    std::vector<int64_t> all[2];
    std::vector<int32_t> ids[2];
    const int64_t* all_p[2] = {};
    const int32_t* ids_p[2] = {};
    int64_t rows[2] = {}, pad[2] = {};
    for (int i = 0; i < n_micro_; ++i) {
      const Micro& m = micro_[i];
      all[i].resize(fixed_layers_.size() * static_cast<std::size_t>(stride));
      be_.download(all[i].data(), m.d_expert_counts.data(), all[i].size() * sizeof(int64_t));
      all_p[i] = all[i].data();
      const Slice sl = my_slice(m);
      rows[i] = sl.rows, pad[i] = sl.pad;
      if (sl.pad <= 0) continue;
      ids[i].resize(fixed_layers_.size() * static_cast<std::size_t>(sl.rows * ks_all));
      be_.download(ids[i].data(), m.gate_ids.data(), ids[i].size() * sizeof(int32_t));
      ids_p[i] = ids[i].data();
    }
    fold_device_counts(expert_counts_, fixed_layers_, n_micro_, rows, pad, all_p, ids_p);
    counts_on_device_ = false;
  }
  return expert_counts_;
}

void Model::fold_device_counts(std::vector<int64_t>& out, const std::vector<uint8_t>& fixed, int n_micro,
                               const int64_t* rows, const int64_t* pad, const int64_t* const* all,
                               const int32_t* const* ids) const {
  const ModelConfig& c = config();
  const int64_t E = c.n_routed_experts, stride = E + shared_pieces_, ks_all = c.num_experts_per_tok + shared_pieces_;
  for (std::size_t l = 0; l < fixed.size(); ++l)
    if (fixed[l]) std::fill_n(out.begin() + static_cast<std::ptrdiff_t>(l * E), E, int64_t{0});
  for (int i = 0; i < n_micro; ++i) {
    for (std::size_t l = 0; l < fixed.size(); ++l)
      if (fixed[l])
        for (int64_t e = 0; e < E; ++e) out[l * static_cast<std::size_t>(E) + e] += all[i][l * stride + e];
    // The padding rows out again: each fixed layer's routing of the micro-batch's last row on
    // this rank (moe_route keeps the layers' routing apart in gate_ids on that path).
    if (pad[i] <= 0) continue;
    const int64_t per_layer = rows[i] * ks_all;
    for (std::size_t l = 0; l < fixed.size(); ++l) {
      if (!fixed[l]) continue;
      const bool shared = weights_.layers[l].has_shared;
      const int64_t ks = c.num_experts_per_tok + (shared ? shared_pieces_ : 0);
      const int32_t* last = ids[i] + static_cast<int64_t>(l) * per_layer + (rows[i] - 1) * ks;
      for (int64_t k = 0; k < ks; ++k)
        if (last[k] >= 0 && last[k] < E) out[l * static_cast<std::size_t>(E) + last[k]] -= pad[i];
    }
  }
}

void Model::launch(const std::vector<SeqInput>& batch, std::span<const backend::SampleSpec> specs,
                   std::span<const backend::LogitEdit> edits, backend::TokenMasks masks) {
  launch_forward(batch);
  launch_sampling(specs, edits, masks);
}

void Model::launch_forward(const std::vector<SeqInput>& batch) {
  Draws& d = draws_[launch_slot_];
  if (d.pending) throw Error("model: launch() with two steps launched and not collected");
  std::vector<float> no_logits;
  run_step(batch, no_logits, nullptr, nullptr, &d);
}

void Model::Pinned::hold(backend::Backend& be, std::size_t n) {
  if (bytes >= n) return;
  be.host_release(p);
  p = nullptr, bytes = 0;
  p = be.host_alloc(n + n / 2);
  bytes = n + n / 2;
}

void Model::launch_sampling(std::span<const backend::SampleSpec> specs, std::span<const backend::LogitEdit> edits,
                            backend::TokenMasks masks) {
  sample_kept(Sampling{specs, edits, nullptr, masks}, &draws_[launch_slot_]);
  launch_slot_ ^= 1;
}

void Model::collect(std::vector<int32_t>& argmax, std::vector<backend::SampleOut>& samples) {
  Draws& d = draws_[collect_slot_];
  if (!d.pending) throw Error("model: collect() without a launched step");
  d.pending = false;
  collect_slot_ ^= 1;
  be_.download_wait(d.ticket);
  argmax.assign(static_cast<std::size_t>(d.n_rows), -1);
  if (d.argmax_ran) std::memcpy(argmax.data(), d.host.p, static_cast<std::size_t>(d.n_rows) * sizeof(int32_t));
  for (int32_t k : d.keep) argmax[static_cast<std::size_t>(k)] = -1;
  samples.resize(static_cast<std::size_t>(d.n_keep));
  if (d.n_keep > 0)
    std::memcpy(samples.data(), static_cast<const char*>(d.host.p) + draws_offset(d.n_rows),
                static_cast<std::size_t>(d.n_keep) * sizeof(backend::SampleOut));
  if (!d.kept_counts) {
    collected_counts_.clear();
    return;
  }
  collected_counts_.swap(d.counts);
  if (d.device_counts) {
    const char* host = static_cast<const char*>(d.host.p);
    const int64_t* all[2] = {};
    const int32_t* ids[2] = {};
    for (int i = 0; i < d.n_micro; ++i) {
      all[i] = reinterpret_cast<const int64_t*>(host + d.counts_at[i]);
      ids[i] = reinterpret_cast<const int32_t*>(host + d.ids_at[i]);
    }
    fold_device_counts(collected_counts_, d.fixed, d.n_micro, d.rows, d.pad, all, ids);
  }
}

// launch()'s end: the draws' downloads are queued into page-locked memory; collect() waits for
// them. With keep_expert_counts, the step's expert counts go along (the next step overwrites them).
void Model::queue_draws(Draws& d, int64_t n_rows, const std::vector<int32_t>& keep, const int32_t* d_am,
                        const backend::SampleOut* d_out) {
  const ModelConfig& c = config();
  const int64_t n_keep = static_cast<int64_t>(keep.size());
  auto align = [](std::size_t b) { return (b + 15) / 16 * 16; };
  std::size_t bytes = align(draws_offset(n_rows) + static_cast<std::size_t>(n_keep) * sizeof(backend::SampleOut));
  d.kept_counts = keep_counts_ && !expert_counts_.empty();
  d.device_counts = d.kept_counts && counts_on_device_;
  const int64_t ks_all = c.num_experts_per_tok + shared_pieces_, stride = c.n_routed_experts + shared_pieces_;
  if (d.device_counts) {
    d.n_micro = n_micro_;
    for (int i = 0; i < n_micro_; ++i) {
      const Slice sl = my_slice(micro_[i]);
      d.rows[i] = sl.rows, d.pad[i] = sl.pad;
      d.counts_at[i] = bytes;
      bytes += align(fixed_layers_.size() * static_cast<std::size_t>(stride) * sizeof(int64_t));
      d.ids_at[i] = bytes;
      if (sl.pad > 0) bytes += align(fixed_layers_.size() * static_cast<std::size_t>(sl.rows * ks_all) * sizeof(int32_t));
    }
  }
  d.host.hold(be_, bytes);
  d.n_rows = n_rows, d.n_keep = n_keep, d.argmax_ran = d_am != nullptr;
  d.keep.assign(keep.begin(), keep.end());
  if (d_am) d.ticket = be_.download_async(d.host.p, d_am, static_cast<std::size_t>(n_rows) * sizeof(int32_t));
  if (d_out || !d_am)
    d.ticket = be_.download_async(static_cast<char*>(d.host.p) + draws_offset(n_rows), d_out,
                                  static_cast<std::size_t>(n_keep) * sizeof(backend::SampleOut));
  if (d.kept_counts) d.counts = expert_counts_;  // the host's part (layers counted on the host)
  if (d.device_counts) {
    d.fixed = fixed_layers_;
    char* host = static_cast<char*>(d.host.p);
    for (int i = 0; i < n_micro_; ++i) {
      d.ticket = be_.download_async(host + d.counts_at[i], micro_[i].d_expert_counts.data(),
                                    fixed_layers_.size() * static_cast<std::size_t>(stride) * sizeof(int64_t));
      if (d.pad[i] > 0)
        d.ticket = be_.download_async(host + d.ids_at[i], micro_[i].gate_ids.data(),
                                      fixed_layers_.size() * static_cast<std::size_t>(d.rows[i] * ks_all) *
                                          sizeof(int32_t));
    }
  }
  d.pending = true;
}

}  // namespace dpa::model
