// The CPU reference backend: plain loops, fp32 activations, double accumulation in reductions,
// one fixed summation order, so results are deterministic and independent of batch composition.
#pragma once

#include <cstdlib>
#include <cstring>

#include "backend/backend.h"

namespace dpa::backend {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  // Host memory; copies are memcpy; weights are used where they are (the checkpoint mapping).
  void* alloc(std::size_t bytes) override;
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, std::size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, std::size_t bytes) override { std::memmove(dst, src, bytes); }
  void fill_zero(void* p, std::size_t bytes) override { std::memset(p, 0, bytes); }
  WeightView prepare_weight(const WeightView& w) override { return w; }
  void synchronize() override {}
  bool supports_weight(DType dtype) const override {
    return dtype == DType::f32 || dtype == DType::bf16;
  }
  void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) override;
  void rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) override;
  void add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n, float eps,
                    float* out) override;
  void linear(const float* x, int64_t n, const WeightView& w, float* y) override;
  void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
              int64_t cols) override;
  void paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start, int64_t n,
                   const float* src, int64_t lds) override;
  void paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n, float* out,
                    int64_t ldo, int64_t copies, int64_t copy_stride) override;
  void linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                      int64_t w_stride, int64_t batch, float* y, int64_t ldy, int64_t stride_y) override;
  void kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n, int64_t col0,
                int64_t cols, const float* src, int64_t lds) override;
  void mla_prepare(const MlaPrepare& a) override;
  void add(float* y, const float* x, int64_t count) override;
  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override;
  void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
            const int64_t* positions, const RopeParams& p) override;
  void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                 int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                 float* out) override;
  void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                    const PagedLatent& cache, int64_t q_start, float scale,
                    float* out_lat) override;
  void mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& cache,
                  float scale, float* out_lat) override;
  void moe_experts(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                   int64_t n_experts, const WeightView* gate, const WeightView* up, const WeightView* down,
                   void* out, DType out_dtype, int64_t out_rows, DType x_dtype) override;
  void moe_experts_fixed(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                         int64_t n_experts, int64_t capacity, int64_t rows, const WeightView* gate,
                         const WeightView* up, const WeightView* down, void* out, DType out_dtype,
                         int64_t out_rows, DType x_dtype) override;
  void moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                float* weights) override;
  void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                int32_t* position) override;
  void moe_counts(int64_t* counts) override;
  void moe_counts_to(int64_t* dst) override;
  void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out) override;
  void gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                       void* out, DType out_dtype) override;
  void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out) override;
  void moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                   int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d, void* send,
                   int32_t* slot_row, DType send_dtype) override;
  void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                     int64_t* local_counts, int32_t* order) override;
  void moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                         int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t n_slots, int64_t d,
                         const EpPeers& peers, int32_t* slot_row, DType rows_dtype) override;
  void moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                          int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t d, int64_t* counts,
                           int64_t* local_counts, int32_t* order, DType rows_dtype) override;
  void moe_ep_return_peers(const void* results, const int64_t* counts, int64_t n_peers, int64_t experts_per_peer,
                           int64_t capacity, int64_t stride, int64_t d, const EpPeers& peers,
                           DType dtype) override;
  void moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq) override;
  void moe_combine(const void* y, const int32_t* rows, const float* weights, int64_t n, int64_t top_k,
                   int64_t d, float* out, bool accumulate, DType y_dtype) override;
  void take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) override;
  void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) override;
  void edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) override;
  void mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n) override;
  void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs,
              SampleOut* out) override;

 private:
  std::vector<int64_t> counts_;  // the last moe_sort's, until moe_counts reads them
  bool counts_pending_ = false;
};

// Row r of a weight view as f32 into dst[0..w.cols).
void load_row(const WeightView& w, int64_t r, float* dst);
// Throws unless a KV cache of `dtype` is f32 (the only cache the CPU ops take).
void require_f32_cache(DType dtype, const char* op);

}  // namespace dpa::backend
