// The CUDA backend's class, shared by its source files (cuda_backend.cpp: construction, memory,
// weights, phase marks and helpers; dense_ops.cpp, attention_ops.cpp, moe_ops.cpp: the ops,
// as the CPU reference is split). Private to src/backend/cuda; users call make_cuda_backend.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "core/cuda_check.h"
#include "kernels/linear_small.cuh"
#include "kernels/mla_decode.cuh"

namespace dpa::backend {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);

  void set_attention_tf32(bool on) override { attention_tf32_ = on; }

  // The math mode of attention's GEMMs for the lifetime of this object (TF32 when allowed).
  struct AttentionMath {
    cublasHandle_t h;
    bool tf32;
    AttentionMath(cublasHandle_t handle, bool on) : h(handle), tf32(on) {
      if (tf32) DPA_CHECK_CUBLAS(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
    }
    ~AttentionMath() {
      if (tf32) cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    }
  };

  double copy_bandwidth_gbs() override;
  bool capture_begin() override;
  void* capture_end() override;
  void replay(void* graph) override;
  void drop_graph(void* graph) override;
  uint64_t workspace_epoch() const override { return workspace_epoch_; }
  void profiler_window(bool open) override;
  void phase_mark(const char* name) override;
  void phase_collect(std::map<std::string, double>& into) override;

  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }

  // ---- Memory.
  void* alloc(std::size_t bytes) override;
  void release(void* p) override;
  void upload(void* dst, const void* host_src, std::size_t bytes) override;
  void upload_pinned(void* dst, const void* host_src, std::size_t bytes) override;
  void download(void* host_dst, const void* src, std::size_t bytes) override;
  void* host_alloc(std::size_t bytes) override;
  void host_release(void* p) override;
  uint64_t download_async(void* host_dst, const void* src, std::size_t bytes) override;
  void download_wait(uint64_t ticket) override;
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void fill_zero(void* p, std::size_t bytes) override;

  WeightView prepare_weight(const WeightView& w) override;

  void synchronize() override {
    not_capturing("synchronize");
    DPA_CHECK_CUDA(cudaStreamSynchronize(lanes_[1]));
    DPA_CHECK_CUDA(cudaStreamSynchronize(lanes_[0]));
  }
  void* stream() const override { return lanes_[0]; }
  int lanes() const override { return 2; }
  void set_lane(int lane) override;
  uint64_t lane_signal() override;
  void lane_wait(uint64_t mark) override;
  void* lane_stream(int lane) const override { return lane == 0 || lane == 1 ? lanes_[lane] : nullptr; }
  bool supports_kv(DType dtype) const override { return dtype == DType::f32 || dtype == DType::bf16; }
  bool supports_weight(DType dtype) const override;

  // ---- Ops.
  void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) override;

  void rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) override;

  void add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n, float eps,
                    float* out) override;

  // Row-major y[n, R] = x[n, C] · W^T is, column-major, y^T[R, n] = W'^T · x^T with W' the
  // column-major [C, R] matrix of leading dimension ld that the row-major W is.
  void linear(const float* x, int64_t n, const WeightView& w, float* y) override;
  void paged_gather_many(const PagedLatent* caches, const int64_t* n, const int64_t* row0, int64_t n_seqs,
                         int64_t col0, int64_t cols, float* out, int64_t ldo) override;
  void linear_many(const float* x, int64_t n, std::span<const LinearOut> outs) override;
  // The norm writes bf16 rows as well when the first projection takes cuBLAS's bf16 route.
  void norm_linear(float* residual, const float* x, const WeightView& w, int64_t n, float eps, float* out,
                   std::span<const LinearOut> outs) override;

  void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
              int64_t cols) override;

  void paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start, int64_t n,
                   const float* src, int64_t lds) override;

  void paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n, float* out,
                    int64_t ldo, int64_t copies, int64_t copy_stride) override;

  // Column-major view as in linear, one GEMM per batch entry in a single strided-batched call.
  void linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                      int64_t w_stride, int64_t batch, float* y, int64_t ldy,
                      int64_t stride_y) override;

  void kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n,
                int64_t col0, int64_t cols, const float* src, int64_t lds) override;

  void mla_prepare(const MlaPrepare& a) override;
  // The prepare kernel writes W_UK's input rounded (head-major) where cuBLAS takes the product.
  void mla_prepare_uk(const MlaPrepare& a, const WeightView& w_uk, int64_t w_stride, float* q_lat) override;
  // mla_prepare; q_nope_hm (or null): the nope parts rounded, head-major (MlaPrepareArgs).
  void mla_prepare_into(const MlaPrepare& a, uint16_t* q_nope_hm);
  void add(float* y, const float* x, int64_t count) override;

  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override;

  void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
            const int64_t* positions, const RopeParams& p) override;

  void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                 int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                 float* out) override;
  // Where the flash kernel applies (flash_applies), every sequence in one launch (or a few).
  void attention_packed(const float* q, const float* k, const float* v, const PackedSeq* seqs, int64_t n_seqs,
                        int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out) override;
  void attention_packed_mla(const float* q, const float* kvb, const float* k_pe, const PackedSeq* seqs, int64_t n_seqs,
                            int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v, float scale, float* k, float* v,
                            float* out) override;

  void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                    const PagedLatent& cache, int64_t q_start, float scale,
                    float* out_lat) override;

  void mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c,
                  float scale, float* out_lat) override;
  // The bf16-cache kernel (fewer than kWgmmaMinHeads heads) writes the latents rounded for the
  // projection's GEMM, head-major, where cuBLAS takes the projection.
  // And the value projection writes o rounded for o_proj's GEMM where cuBLAS takes o_proj.
  void mla_decode_uv(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c, float scale,
                     float* out_lat, const WeightView& w_uv, int64_t w_stride, float* o, int64_t ldo,
                     int64_t stride_o, const LinearOut* o_proj) override;
  // Whether mla_decode takes the warpgroup-MMA kernel for these, and whether (failing that) the
  // bf16-cache mma.sync kernel, which mla_decode_bf16_into runs (out_hm: mla_decode_bf16's
  // rounded head-major output instead of out_lat).
  bool mla_wgmma_takes(int64_t n_heads, const PagedBatch& c) const;
  bool mla_bf16_takes(const PagedBatch& c) const;
  void mla_decode_bf16_into(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c, float scale,
                            float* out_lat, uint16_t* out_hm);

  // All experts with rows in a few launches: experts sorted by row count are grouped so that a
  // group pads its experts to its largest count (at most ~25% or 16 rows of padding each); rows
  // are gathered into padded per-expert slabs (bf16 for bf16 weights), gate and up of a group
  // are one batched GEMM, SwiGLU one kernel, down one batched GEMM per group, then one scatter.
  void moe_experts(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                   int64_t n_experts, const WeightView* gate, const WeightView* up, const WeightView* down,
                   void* out, DType out_dtype, int64_t out_rows, DType x_dtype) override;
  void moe_experts_fixed(const void* x, const int32_t* order, int64_t x_div, const int64_t* counts,
                         int64_t n_experts, int64_t capacity, int64_t rows, const WeightView* gate,
                         const WeightView* up, const WeightView* down, void* out, DType out_dtype,
                         int64_t out_rows, DType x_dtype) override;
  void moe_counts_to(int64_t* dst) override;

  void moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                float* weights) override;

  void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                int32_t* position) override;
  void moe_counts(int64_t* counts) override;

  void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out) override;

  void gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                       void* out, DType out_dtype) override;

  void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                    float* out) override;

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
  bool supports_peer_memory() const override { return true; }
  bool bf16_expert_rows() const override { return true; }
  std::vector<uint8_t> export_memory(void* p) override;
  void* import_memory(const std::vector<uint8_t>& handle) override;
  void release_imported(void* p) override;
  void moe_combine(const void* y, const int32_t* rows, const float* weights, int64_t n, int64_t top_k,
                   int64_t d, float* out, bool accumulate, DType y_dtype) override;

  void take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) override;
  void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) override;

  void edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) override;
  void mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n) override;

  void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs, SampleOut* out) override;

 private:
  std::vector<cudaEvent_t> mark_events_;  // phase marks, reused across steps
  cudaEvent_t window_events_[2] = {};      // profiler_window's open and close
  std::vector<const char*> mark_names_;
  std::size_t n_marks_ = 0;
  static bool is_device(const void* p);

  // Whether p lies inside a weight prepare_weight copied (a map lookup: this runs for every
  // weight of every op, so no driver call), else whether the driver says device memory.
  bool on_device(const void* p) const;

  // Weights must be prepared (device memory) and of a supported dtype.
  void check_weight(const WeightView& w, const char* op) const;

  // linear's bf16 activation workspace (which = 0; 1: a second one, for a GEMM whose bf16 input
  // and output are both workspace), grown (never shrunk) to `count` elements.
  uint16_t* bf16_workspace(std::size_t count, int which = 0);

  // Throws when a graph is being recorded (what an op must not do then: wait, copy from the host,
  // allocate), so the caller can drop the capture and run the ops instead.
  void not_capturing(const char* what) const {
    if (capturing_) throw Error(fmt::format("cuda backend: {} while recording a graph", what));
  }

  // moe_experts' workspace, grown (never shrunk).
  char* moe_workspace(std::size_t bytes);

  // check_weight on the experts in `ids`. A model passes the same arrays every step: arrays
  // whose every view checked out are remembered by a digest of their views (pointer, dtype,
  // shape) and not walked again (a changed view changes the digest). Returns the digest.
  uint64_t check_expert_weights(const std::vector<int64_t>& ids, int64_t n_experts, const WeightView* gate,
                            const WeightView* up, const WeightView* down);

  // Attention's workspace (split-KV partials, or the GEMM form's gathered cache and scores),
  // grown (never shrunk) to `floats`; null for none. One op uses it at a time, in stream order.
  float* scratch(int64_t floats);

  enum class AttnMode { automatic, kernel, gemm };
  static constexpr int64_t kGemmMinCtx = 256;      // visible keys from which "auto" takes GEMMs
  static constexpr int64_t kScoreCap = 32 << 20;  // score floats per query chunk (128 MiB)
  static bool kv_bf16(DType dtype);
  bool use_gemm(int64_t n_ctx) const;
  // Whether expanded attention takes the bf16 flash kernel: where the GEMM forms may round to
  // TF32 (bf16-class inputs), in the automatic mode, for the shapes it takes.
  bool flash_applies(int64_t d_qk, int64_t d_v, const float* out, int64_t n_heads) const;

  // Row-major Y[n, m] = X[n, k] · A^T with A row-major [m, k] (stride lda), X stride ldx, Y stride
  // ldy (= linear's mapping onto column-major SGEMM); beta 0 or 1.
  void sgemm_xat(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* x,
                 int64_t ldx, float beta, float* y, int64_t ldy);

  // Absorbed MLA as GEMMs: the sequence's cache rows gathered into C [n_ctx, W], then per chunk of
  // queries S = Q_lat·C_lat^T + Q_pe·C_pe^T, P = causal softmax(scale·S), O = P·C_lat.
  void mla_gemm(const float* q_lat, const float* q_pe, int64_t n_q, int64_t H,
                const PagedLatent& cache, int64_t q_start, float scale, float* out);

  // Expanded attention as head-batched GEMMs: per chunk of queries and head h,
  // S_h = Q_h·K_h^T, P_h = causal softmax(scale·S_h), O_h = P_h·V_h (scores laid out [H][q][key]).
  void attention_gemm(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                      int64_t H, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                      float* out);

  static void check_dims(int64_t d_qk, int64_t d_v, const char* op);

  static int to_int(int64_t v, const char* what);

  int device_;
  cudaStream_t stream_ = nullptr;  // the current lane's: every op is queued here
  // Lanes (Backend::set_lane): two streams, and a ring of events for lane_signal (a mark is the
  // ring position; cudaStreamWaitEvent takes the event's state when called, so reuse is safe).
  cudaStream_t lanes_[2] = {nullptr, nullptr};
  static constexpr std::size_t kLaneEvents = 64;
  std::vector<cudaEvent_t> lane_events_;
  uint64_t lane_marks_ = 0;
  // download_async's tickets: a ring of events, one recorded after each queued download.
  static constexpr std::size_t kDownloadEvents = 16;
  std::vector<cudaEvent_t> download_events_;
  uint64_t downloads_ = 0;
  cublasHandle_t cublas_ = nullptr;
  static constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
  void* cublas_ws_ = nullptr;
  mutable std::mutex mu_;
  std::map<std::tuple<const void*, DType, int64_t, int64_t, int64_t>, void*> weights_;
  std::map<std::uintptr_t, std::size_t> prepared_;  // device copies of weights: start -> bytes
  struct Bf16Workspace {
    uint16_t* p = nullptr;
    std::size_t elems = 0;
  };
  Bf16Workspace bf16_ws_[2];  // bf16 copies of the GEMMs' activations (bf16_workspace)
  // upload's page-locked staging: two halves of `half_bytes` used in turn, the one being filled
  // (`half`, `used` bytes, the lanes that copied from it: bit 0 and 1), and per half and lane an
  // event recorded after its last copy when it was left. The halves start at kStageHalfBytes and
  // grow (once the copies from them are done) to the largest upload up to kStageMaxHalfBytes.
  static constexpr std::size_t kStageHalfBytes = std::size_t{1} << 20;
  static constexpr std::size_t kStageMaxHalfBytes = std::size_t{64} << 20;
  struct Staging {
    char* base = nullptr;
    std::size_t half_bytes = 0;
    int half = 0;
    std::size_t used = 0;
    unsigned lanes = 0;
    cudaEvent_t done[4] = {nullptr, nullptr, nullptr, nullptr};
  } staging_host_;
  // Leaves the half being filled: its lanes' events recorded.
  void staging_leave_half();
  AttnMode attn_mode_ = AttnMode::automatic;
  int mla_decode_variant_ = 2;
  bool attention_tf32_ = false;
  int mla_bf16_stages_ = 2;
  bool mla_bf16_bulk_ = true;  // bf16 mla_decode tiles by bulk copies (else cp.async)
  // DPA_CUDA_MLA_ROUNDED: W_UK's input rounded by mla_prepare_uk's kernel, o_proj's by the value
  // projection's GEMM (mla_decode_uv).
  bool uk_rounded_ = true, o_rounded_ = true;
  // bf16 mla_decode on the warpgroup-MMA kernel (64 heads a block): auto (from kWgmmaMinHeads heads
  // on), always where it applies, or never.
  enum class MlaWgmma { automatic, always, never } mla_wgmma_ = MlaWgmma::automatic;
  // How that kernel's tiles come in and its scores are shared (kernels/mla_decode.cuh).
  kernels::MlaWgmmaForm mla_wgmma_form_ = kernels::MlaWgmmaForm::seesaw;
  static constexpr int64_t kWgmmaMinHeads = 17;
  double copy_gbs_ = -1;  // copy_bandwidth_gbs(), once measured
  float* attn_ws_ = nullptr;  // scratch(): attention's workspace
  std::size_t attn_ws_floats_ = 0;
  int64_t* counts_dev_ = nullptr;  // moe_sort's counts and error flag
  int64_t* counts_pinned_ = nullptr;  // their copy on the host (page-locked: the copy is async)
  std::size_t counts_elems_ = 0;
  cudaEvent_t counts_ready_ = nullptr;  // the copy is done
  int64_t counts_n_ = 0;                // experts of the pending counts
  bool counts_pending_ = false, counts_zero_ = false;
  char* moe_ws_ = nullptr;  // moe_experts: pointer arrays, row map and padded activations
  std::size_t moe_ws_bytes_ = 0;
  // DPA_CUDA_SMALL_LINEAR: kernels::small_linear never, where preferred, or wherever it applies.
  enum class SmallLinearUse { never, preferred, always } small_linear_ = SmallLinearUse::preferred;
  // linear / linear_batched by kernels::small_linear where it applies (bf16 weights, few rows);
  // false: not taken, nothing done.
  bool small_linear(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w, int64_t w_stride,
                    int64_t batch, float* y, int64_t ldy, int64_t stride_y);
  // small_linear's arguments as the kernel takes them, and whether it takes them.
  static kernels::SmallLinear small_linear_args(const float* x, int64_t ldx, int64_t stride_x, int64_t n,
                                                const WeightView& w, int64_t w_stride, int64_t batch, float* y,
                                                int64_t ldy, int64_t stride_y);
  bool small_linear_takes(const kernels::SmallLinear& a, const WeightView& w) const;
  // linear_many from x's rows already rounded to bf16 when `rounded` is set (norm_linear,
  // mla_decode_uv's output projection); x itself is then not read by cuBLAS's route.
  void linear_many_from(const float* x, const uint16_t* rounded, int64_t n, std::span<const LinearOut> outs);
  // linear_batched from x's rows already rounded to bf16 by the caller, [batch][n][w.cols] (as
  // strided_to_bf16 lays them out), when `rounded` is set: cuBLAS on them, no small-row kernel.
  void linear_batched_from(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                           int64_t w_stride, int64_t batch, float* y, int64_t ldy, int64_t stride_y,
                           const uint16_t* rounded);
  // Its cuBLAS call: bf16 rows xb [batch][n][w.cols] by bf16 weights into y, f32 or (y_bf16) bf16
  // rounded from the f32 sums.
  void bf16_gemm_batched(const uint16_t* xb, int64_t n, const WeightView& w, int64_t w_stride, int64_t batch, void* y,
                         bool y_bf16, int64_t ldy, int64_t stride_y);
  std::vector<char> staging_;  // moe_experts' host side of the pointer arrays and row map
  std::unordered_set<uint64_t> checked_experts_;  // check_expert_weights: digests of checked arrays
  // moe_experts_fixed's pointer arrays in device memory, one per (check_expert_weights' digest of
  // the experts, capacity, workspace): uploaded once, so a call issues no host-to-device copy.
  // moe_experts' and moe_experts_fixed's f32 results where bf16 ones were asked for and the
  // warpgroup-MMA form does not apply: rounded from here into out (round_results).
  Buffer<float> results_f32_;
  float* results_f32(int64_t floats);
  // The rows in use of an exchange's bf16 rows in f32, at their indices, for the experts' forms
  // that read f32 (kernels::bf16_rows_to_f32's arguments): a buffer of its own, since those forms
  // may still use results_f32_.
  Buffer<float> rows_f32_;
  const float* rows_to_f32(const void* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                           int64_t capacity, int64_t total, int64_t bound, int64_t rows, int64_t d);
  // The rows in use of f (rows_to_f32's arguments) rounded into out's bf16 rows.
  void round_results(const float* f, const int32_t* order, const int64_t* counts, int64_t n_experts,
                     int64_t capacity, int64_t total, int64_t bound, int64_t rows, int64_t d, void* out);
  std::map<std::tuple<uint64_t, int64_t, const void*>, void**> fixed_ptrs_;
  // The tensor-core form of moe_experts_fixed (kernels/moe_expert_gemm): per expert arrays (by
  // check_expert_weights' digest), the gate, up and down pointers in device memory, and whether
  // every view starts on 16 bytes (else the cuBLAS form runs).
  struct ExpertPointers {
    void** dev = nullptr;
    bool aligned = false;
  };
  std::unordered_map<uint64_t, ExpertPointers> expert_ptrs_;
  // The warpgroup-MMA form of moe_experts (kernels/moe_expert_wgmma): the experts' weight tensor
  // maps in device memory, by the digest of every expert (null: the driver refused one).
  // DPA_MOE_WGMMA: auto (from kWgmmaExpertMinRows rows an active expert on average), 1 (wherever
  // it applies), 0 (never: cuBLAS over padded groups). Measured on an H200 with V2-Lite's experts
  // (moe_experts_bench): ahead of cuBLAS from 64 tokens x top-6 (6 rows an expert) to 8,192, behind
  // at 16 tokens (1.5 rows an expert: 0.275 against 0.246 ms).
  std::unordered_map<uint64_t, void*> expert_maps_;
  enum class ExpertWgmma { automatic, always, never } expert_wgmma_ = ExpertWgmma::automatic;
  static constexpr int64_t kWgmmaExpertMinRows = 4;
  // DPA_MOE_WGMMA_BLOCKS: the kernels' block width, auto (narrow at up to a tile's rows an expert
  // on average, ExpertWgmmaArgs::narrow), wide or narrow everywhere.
  enum class ExpertBlocks { automatic, wide, narrow } expert_blocks_ = ExpertBlocks::automatic;
  // moe_experts / moe_experts_fixed by the warpgroup-MMA kernels; false: they do not apply (or
  // are not wanted at these rows), nothing done. The fixed form plans its tiles on the device.
  // `digest`: check_expert_weights' of the arrays.
  // x: f32 rows, or bf16 ones with x_bf16.
  bool moe_experts_wgmma(const void* x, bool x_bf16, const int32_t* order, int64_t x_div, const int64_t* counts,
                         int64_t n_experts, int64_t total, uint64_t digest, const WeightView* gate,
                         const WeightView* up, const WeightView* down, void* out, bool out_bf16);
  bool moe_experts_fixed_wgmma(const void* x, bool x_bf16, const int32_t* order, int64_t x_div, const int64_t* counts,
                               int64_t n_experts, int64_t capacity, int64_t rows, uint64_t digest,
                               const WeightView* gate, const WeightView* up, const WeightView* down, void* out,
                               bool out_bf16);
  // What both run: the tiles planned on the device from the counts (HOST memory when
  // host_counts, uploaded first; else backend memory), each count taken within `capacity`, at
  // most max_tiles tiles over at most max_rows rows; the rows gathered to bf16, then both GEMMs.
  // `rows`: the rows in use (they pick the blocks' width). out: f32 results, or bf16 (out_bf16).
  void wgmma_experts_planned(const void* x, bool x_bf16, const int32_t* order, int64_t x_div, const int64_t* counts,
                             bool host_counts, int64_t n_experts, int64_t capacity, int64_t max_tiles,
                             int64_t max_rows, int64_t rows, const void* maps, int64_t D, int64_t I, void* out,
                             bool out_bf16 = false);
  // The experts' tensor maps in device memory, or null where the kernels do not take them
  // (shapes, dtype, alignment, a driver refusal): worked out once per digest.
  const void* wgmma_expert_maps(int64_t n_experts, const WeightView* gate, const WeightView* up,
                                const WeightView* down, uint64_t digest);
  // Whether `rows` rows over `experts` experts should take the kernels (DPA_MOE_WGMMA).
  bool wgmma_experts_wanted(int64_t rows, int64_t experts) const;
  bool capturing_ = false;         // between capture_begin and capture_end
  uint64_t workspace_epoch_ = 0;   // bumped at every workspace reallocation
};

}  // namespace dpa::backend
