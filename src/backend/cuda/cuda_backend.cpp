// The CUDA backend (see cuda_backend.h).
#include "backend/cuda/cuda_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/argmax.cuh"
#include "kernels/batched_ops.cuh"
#include "kernels/convert.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/embedding.cuh"
#include "kernels/flash_prefill.cuh"
#include "kernels/gather_scatter.cuh"
#include "kernels/mla_attention.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/moe_combine.cuh"
#include "kernels/moe_gate.cuh"
#include "kernels/moe_sort.cuh"
#include "kernels/sample.cuh"
#include "kernels/rms_norm.cuh"
#include "kernels/rope.cuh"

namespace dpa::backend {

// The sampling structs cross into the kernels as their mirrors there.
static_assert(sizeof(LogitEdit) == sizeof(kernels::LogitEditArgs) &&
              offsetof(LogitEdit, subtract) == offsetof(kernels::LogitEditArgs, subtract));
static_assert(sizeof(SampleSpec) == sizeof(kernels::SampleSpecArgs) &&
              offsetof(SampleSpec, u) == offsetof(kernels::SampleSpecArgs, u) &&
              offsetof(SampleSpec, n_top) == offsetof(kernels::SampleSpecArgs, n_top));
static_assert(sizeof(SampleOut) == sizeof(kernels::SampleOutArgs) &&
              offsetof(SampleOut, top_token) == offsetof(kernels::SampleOutArgs, top_token) &&
              offsetof(SampleOut, top_logprob) == offsetof(kernels::SampleOutArgs, top_logprob) &&
              kMaxTopLogprobs == kernels::kSampleMaxTop);

namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    // Attention form: "kernel" (one fused kernel, split over keys when the context is long),
    // "gemm" (scores and P·V by cuBLAS around a masked softmax), default: gemm from
    // kGemmMinCtx visible keys on. For tests and measurements.
    if (const char* m = std::getenv("DPA_CUDA_ATTN")) {
      const std::string mode(m);
      if (mode == "kernel") attn_mode_ = AttnMode::kernel;
      else if (mode == "gemm") attn_mode_ = AttnMode::gemm;
      else if (mode != "auto" && !mode.empty())
        throw Error(fmt::format("DPA_CUDA_ATTN={}: expected auto, kernel or gemm", mode));
    }
    // mla_decode kernel version: "v2" (default) or "v1" (the first one; for comparisons).
    if (const char* m = std::getenv("DPA_CUDA_MLA_DECODE")) {
      const std::string v(m);
      if (v == "v1") mla_decode_variant_ = 1;
      else if (v == "v2") mla_decode_variant_ = 2;
      else if (!v.empty())
        throw Error(fmt::format("DPA_CUDA_MLA_DECODE={}: expected v1 or v2", v));
    }
    // Depth of the bf16 mla_decode kernel's load ring: 2 (default) .. 5. For measurements.
    if (const char* m = std::getenv("DPA_CUDA_MLA_DECODE_STAGES")) {
      const std::string v(m);
      if (v == "2" || v == "3" || v == "4" || v == "5") mla_bf16_stages_ = std::stoi(v);
      else if (!v.empty())
        throw Error(fmt::format("DPA_CUDA_MLA_DECODE_STAGES={}: expected 2, 3, 4 or 5", v));
    }
    DPA_CHECK_CUDA(cudaSetDevice(device_));
    DPA_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DPA_CHECK_CUBLAS(cublasCreate(&cublas_));
    DPA_CHECK_CUBLAS(cublasSetStream(cublas_, stream_));
    // No TF32 and no reduced-precision reductions: the parity bounds assume IEEE fp32 sums.
    DPA_CHECK_CUBLAS(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  }

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

  void phase_mark(const char* name) override {
    if (n_marks_ == mark_events_.size()) {
      cudaEvent_t e;
      DPA_CHECK_CUDA(cudaEventCreate(&e));
      mark_events_.push_back(e);
    }
    DPA_CHECK_CUDA(cudaEventRecord(mark_events_[n_marks_], stream_));
    mark_names_.resize(n_marks_ + 1);
    mark_names_[n_marks_++] = name;
  }
  void phase_collect(std::map<std::string, double>& into) override {
    if (n_marks_ == 0) return;
    phase_mark("");  // the end of the last phase
    DPA_CHECK_CUDA(cudaEventSynchronize(mark_events_[n_marks_ - 1]));
    for (std::size_t i = 0; i + 1 < n_marks_; ++i) {
      float ms = 0;
      DPA_CHECK_CUDA(cudaEventElapsedTime(&ms, mark_events_[i], mark_events_[i + 1]));
      into[mark_names_[i]] += ms * 1e-3;
    }
    n_marks_ = 0;
  }

  ~CudaBackend() override {
    for (cudaEvent_t e : mark_events_) cudaEventDestroy(e);
    cudaStreamSynchronize(stream_);
    for (auto& [key, p] : weights_) cudaFree(p);
    if (bf16_ws_) cudaFree(bf16_ws_);
    if (counts_dev_) cudaFree(counts_dev_);
    if (attn_ws_) cudaFree(attn_ws_);
    if (moe_ws_) cudaFree(moe_ws_);
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }

  // ---- Memory.
  void* alloc(std::size_t bytes) override {
    void* p = nullptr;
    const cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 1);
    if (rc != cudaSuccess || !p) {
      cudaGetLastError();
      std::size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail_one("CUDA", "cudaMalloc", __FILE__, __LINE__,
               fmt::format("out of device memory allocating {} bytes on GPU {} ({} of {} MiB free): {}",
                           bytes, device_, free_b >> 20, total_b >> 20, cudaGetErrorString(rc)));
    }
    return p;
  }
  void release(void* p) override {
    if (p) DPA_CHECK_CUDA(cudaFree(p));
  }
  void upload(void* dst, const void* host_src, std::size_t bytes) override {
    if (!bytes) return;
    DPA_CHECK_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* host_dst, const void* src, std::size_t bytes) override {
    if (!bytes) return;
    DPA_CHECK_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    DPA_CHECK_CUDA(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    if (!bytes || dst == src) return;
    DPA_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill_zero(void* p, std::size_t bytes) override {
    if (!bytes) return;
    DPA_CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, stream_));
  }

  WeightView prepare_weight(const WeightView& w) override {
    if (!supports_weight(w.dtype))
      throw Error(fmt::format("cuda backend: weight dtype {} not supported", dtype_name(w.dtype)));
    if (w.rows == 0 || w.cols == 0) return WeightView{nullptr, w.dtype, w.rows, w.cols, w.cols};
    if (is_device(w.data)) return w;  // already ours (a prepared view, or a slice of one)
    const auto key = std::make_tuple(w.data, w.dtype, w.rows, w.cols, w.ld);
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = weights_.find(key); it != weights_.end())
      return WeightView::dense(it->second, w.dtype, w.rows, w.cols);
    const std::size_t es = dtype_size(w.dtype);
    void* d = alloc(static_cast<std::size_t>(w.rows * w.cols) * es);
    DPA_CHECK_CUDA(cudaMemcpy2DAsync(d, w.cols * es, w.data, w.ld * es, w.cols * es, w.rows,
                                     cudaMemcpyHostToDevice, stream_));
    DPA_CHECK_CUDA(cudaStreamSynchronize(stream_));
    weights_.emplace(key, d);
    prepared_.emplace(reinterpret_cast<std::uintptr_t>(d), static_cast<std::size_t>(w.rows * w.cols) * es);
    return WeightView::dense(d, w.dtype, w.rows, w.cols);
  }

  void synchronize() override { DPA_CHECK_CUDA(cudaStreamSynchronize(stream_)); }
  void* stream() const override { return stream_; }
  bool supports_kv(DType dtype) const override { return dtype == DType::f32 || dtype == DType::bf16; }
  bool supports_weight(DType dtype) const override {
    return dtype == DType::f32 || dtype == DType::bf16;
  }

  // ---- Ops.
  void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) override {
    if (n <= 0) return;
    check_weight(table, "embedding");
    kernels::embedding(table.data, table.dtype == DType::bf16, table.rows, table.cols, table.ld,
                       ids, n, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) override {
    if (n <= 0) return;
    check_weight(w, "rms_norm");
    kernels::rms_norm(x, w.data, w.dtype == DType::bf16, n, w.cols, eps, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n, float eps,
                    float* out) override {
    if (n <= 0) return;
    check_weight(w, "add_rms_norm");
    kernels::add_rms_norm(residual, x, w.data, w.dtype == DType::bf16, n, w.cols, eps, out,
                          stream_);
    DPA_CHECK_LAUNCH();
  }

  // Row-major y[n, R] = x[n, C] · W^T is, column-major, y^T[R, n] = W'^T · x^T with W' the
  // column-major [C, R] matrix of leading dimension ld that the row-major W is.
  void linear(const float* x, int64_t n, const WeightView& w, float* y) override {
    if (n <= 0 || w.rows <= 0) return;
    if (w.cols <= 0) {
      fill_zero(y, static_cast<std::size_t>(n * w.rows) * sizeof(float));
      return;
    }
    check_weight(w, "linear");
    const int m = to_int(w.rows, "linear rows"), nn = to_int(n, "linear n"),
              k = to_int(w.cols, "linear cols"), lda = to_int(w.ld, "linear ld");
    const float one = 1.0f, zero = 0.0f;
    if (w.dtype == DType::f32) {
      DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one,
                                   static_cast<const float*>(w.data), lda, x, k, &zero, y, m));
    } else {
      const std::size_t count = static_cast<std::size_t>(n * w.cols);
      bf16_workspace(count);
      kernels::f32_to_bf16(x, bf16_ws_, static_cast<int64_t>(count), stream_);
      DPA_CHECK_LAUNCH();
      DPA_CHECK_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data,
                                    CUDA_R_16BF, lda, bf16_ws_, CUDA_R_16BF, k, &zero, y,
                                    CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }

  void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
              int64_t cols) override {
    if (rows <= 0 || cols <= 0) return;
    DPA_CHECK_CUDA(cudaMemcpy2DAsync(dst, ldd * sizeof(float), src, lds * sizeof(float),
                                     cols * sizeof(float), rows, cudaMemcpyDeviceToDevice,
                                     stream_));
  }

  void paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start, int64_t n,
                   const float* src, int64_t lds) override {
    if (n <= 0 || cols <= 0) return;
    kernels::paged_write(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size,
                         cache.width(), col0, cols, start, n, src, lds, stream_);
    DPA_CHECK_LAUNCH();
  }

  void paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n, float* out,
                    int64_t ldo, int64_t copies, int64_t copy_stride) override {
    if (n <= 0 || cols <= 0 || copies <= 0) return;
    kernels::paged_gather(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size,
                          cache.width(), col0, cols, n, out, ldo, copies, copy_stride, stream_);
    DPA_CHECK_LAUNCH();
  }

  // Column-major view as in linear, one GEMM per batch entry in a single strided-batched call.
  void linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                      int64_t w_stride, int64_t batch, float* y, int64_t ldy,
                      int64_t stride_y) override {
    if (n <= 0 || batch <= 0 || w.rows <= 0) return;
    if (w.cols <= 0) {
      for (int64_t b = 0; b < batch; ++b)
        DPA_CHECK_CUDA(cudaMemset2DAsync(y + b * stride_y, ldy * sizeof(float), 0,
                                         w.rows * sizeof(float), n, stream_));
      return;
    }
    check_weight(w, "linear_batched");
    const int m = to_int(w.rows, "linear_batched rows"), nn = to_int(n, "linear_batched n"),
              k = to_int(w.cols, "linear_batched cols"), lda = to_int(w.ld, "linear_batched ld"),
              bc = to_int(batch, "linear_batched batch");
    // With one row the leading dimensions are never stepped; cuBLAS still wants them >= k, m.
    const int ldb = to_int(n == 1 ? std::max(ldx, w.cols) : ldx, "linear_batched ldx");
    const int ldc = to_int(n == 1 ? std::max(ldy, w.rows) : ldy, "linear_batched ldy");
    const float one = 1.0f, zero = 0.0f;
    if (w.dtype == DType::f32) {
      DPA_CHECK_CUBLAS(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, static_cast<const float*>(w.data), lda,
          w_stride, x, ldb, stride_x, &zero, y, ldc, stride_y, bc));
    } else {
      uint16_t* xb = bf16_workspace(static_cast<std::size_t>(batch * n * w.cols));
      kernels::strided_to_bf16(x, ldx, stride_x, n, w.cols, batch, xb, stream_);
      DPA_CHECK_LAUNCH();
      DPA_CHECK_CUBLAS(cublasGemmStridedBatchedEx(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data, CUDA_R_16BF, lda, w_stride, xb,
          CUDA_R_16BF, k, n * w.cols, &zero, y, CUDA_R_32F, ldc, stride_y, bc, CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT));
    }
  }

  void kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n,
                int64_t col0, int64_t cols, const float* src, int64_t lds) override {
    if (n <= 0 || cols <= 0) return;
    kernels::kv_write(base, kv_bf16(dtype), width, slots, n, col0, cols, src, lds, stream_);
    DPA_CHECK_LAUNCH();
  }

  void add(float* y, const float* x, int64_t count) override {
    if (count <= 0) return;
    kernels::add(y, x, count, stream_);
    DPA_CHECK_LAUNCH();
  }

  void silu_mul(const float* gate, const float* up, int64_t count, float* out) override {
    if (count <= 0) return;
    kernels::silu_mul(gate, up, count, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
            const int64_t* positions, const RopeParams& p) override {
    if (n <= 0 || n_heads <= 0 || p.dim <= 1) return;
    kernels::rope(x, n, n_heads, token_stride, head_stride, positions, p.inv_freq, p.dim,
                  p.attention_scaling, stream_);
    DPA_CHECK_LAUNCH();
  }

  void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                 int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                 float* out) override {
    if (n_q <= 0 || n_heads <= 0) return;
    // Where the GEMM forms may round to TF32 (bf16-class inputs), the tensor-core flash kernel.
    if (attention_tf32_ && attn_mode_ == AttnMode::automatic &&
        kernels::flash_prefill_supported(d_qk, d_v, q, k, v, out, n_heads)) {
      const int64_t ws = kernels::flash_prefill_workspace(n_q, n_kv, n_heads, d_qk, d_v);
      kernels::flash_prefill(q, k, v, n_q, n_kv, n_heads, d_qk, d_v, q_start, scale, out,
                             reinterpret_cast<uint16_t*>(scratch((ws + 1) / 2)), stream_);
      DPA_CHECK_LAUNCH();
      return;
    }
    const int64_t n_ctx = std::min(q_start + n_q, n_kv);
    if (use_gemm(n_ctx)) return attention_gemm(q, k, v, n_q, n_kv, n_heads, d_qk, d_v, q_start, scale, out);
    check_dims(d_qk, d_v, "attention");
    const int64_t ws = kernels::attention_workspace_floats(n_q, n_heads, n_ctx, d_v);
    kernels::attention(q, k, v, n_q, n_kv, n_heads, d_qk, d_v, q_start, scale, out,
                       scratch(ws), ws, stream_);
    DPA_CHECK_LAUNCH();
  }

  void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                    const PagedLatent& cache, int64_t q_start, float scale,
                    float* out_lat) override {
    if (n_q <= 0 || n_heads <= 0) return;
    // A bf16 cache is read by the GEMM form (its rows gathered into f32 first).
    if (kv_bf16(cache.dtype) || use_gemm(q_start + n_q))
      return mla_gemm(q_lat, q_pe, n_q, n_heads, cache, q_start, scale, out_lat);
    check_dims(cache.width(), cache.kv_lora, "mla_absorbed");
    const int64_t ws =
        kernels::attention_workspace_floats(n_q, n_heads, q_start + n_q, cache.kv_lora);
    kernels::mla_absorbed(q_lat, q_pe, n_q, n_heads, static_cast<const float*>(cache.base),
                          cache.pages, cache.page_size,
                          cache.kv_lora, cache.rope_dim, q_start, scale, out_lat,
                          scratch(ws), ws, stream_);
    DPA_CHECK_LAUNCH();
  }

  void mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c,
                  float scale, float* out_lat) override {
    if (c.n_seqs <= 0 || n_heads <= 0) return;
    if (kv_bf16(c.dtype) && kernels::mla_decode_bf16_supported(c.kv_lora, c.rope_dim) &&
        reinterpret_cast<uintptr_t>(c.base) % 16 == 0) {
      const int64_t ws = kernels::mla_decode_bf16_workspace_floats(c.n_seqs, n_heads, c.max_ctx_len, c.kv_lora,
                                                                   c.rope_dim, mla_bf16_stages_);
      kernels::mla_decode_bf16(q_lat, q_pe, c.n_seqs, n_heads, static_cast<const uint16_t*>(c.base),
                               c.pages, c.table_offset, c.ctx_len, c.page_size, c.kv_lora, c.rope_dim,
                               c.max_ctx_len, scale, out_lat, scratch(ws), ws, stream_, mla_bf16_stages_);
      DPA_CHECK_LAUNCH();
      return;
    }
    if (!kv_bf16(c.dtype) && kernels::mla_decode_supported(c.kv_lora, c.rope_dim, c.base)) {
      const int64_t ws = kernels::mla_decode_workspace_floats(c.n_seqs, n_heads, c.max_ctx_len,
                                                              c.kv_lora, mla_decode_variant_);
      kernels::mla_decode(q_lat, q_pe, c.n_seqs, n_heads, static_cast<const float*>(c.base), c.pages, c.table_offset,
                          c.ctx_len, c.page_size, c.kv_lora, c.rope_dim, c.max_ctx_len, scale,
                          out_lat, scratch(ws), ws, stream_, mla_decode_variant_);
      DPA_CHECK_LAUNCH();
      return;
    }
    // Shapes the fused kernel does not take: one mla_absorbed per sequence (host round trip).
    std::vector<int32_t> off(c.n_seqs), len(c.n_seqs);
    download(off.data(), c.table_offset, off.size() * sizeof(int32_t));
    download(len.data(), c.ctx_len, len.size() * sizeof(int32_t));
    const int64_t L = c.kv_lora, R = c.rope_dim;
    for (int64_t s = 0; s < c.n_seqs; ++s) {
      PagedLatent one;
      one.base = c.base;
      one.pages = c.pages + off[s];
      one.page_size = c.page_size;
      one.kv_lora = L;
      one.rope_dim = R;
      one.dtype = c.dtype;
      mla_absorbed(q_lat + s * n_heads * L, q_pe + s * n_heads * R, 1, n_heads, one, len[s] - 1,
                   scale, out_lat + s * n_heads * L);
    }
  }

  // All experts with rows in a few launches: experts sorted by row count are grouped so that a
  // group pads its experts to its largest count (at most ~25% or 16 rows of padding each); rows
  // are gathered into padded per-expert slabs (bf16 for bf16 weights), gate and up of a group
  // are one batched GEMM, SwiGLU one kernel, down one batched GEMM per group, then one scatter.
  void moe_experts(const float* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                   const WeightView* gate, const WeightView* up, const WeightView* down,
                   float* out) override {
    if (n_experts <= 0) return;
    std::vector<int64_t> start(n_experts), ids;
    int64_t total = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      if (counts[e] < 0) throw Error(fmt::format("moe_experts: count {} of expert {}", counts[e], e));
      start[e] = total;
      total += counts[e];
      if (counts[e] > 0) ids.push_back(e);
    }
    if (total == 0) return;
    const WeightView& g0 = gate[ids[0]];
    const int64_t D = g0.cols, I = g0.rows;
    const DType dt = g0.dtype;
    const int64_t lda_gu = g0.ld, lda_d = down[ids[0]].ld;
    bool uniform = D > 0 && I > 0 && supports_weight(dt);
    for (int64_t e : ids) {
      const WeightView &g = gate[e], &u = up[e], &d = down[e];
      uniform = uniform && g.dtype == dt && u.dtype == dt && d.dtype == dt && g.rows == I &&
                g.cols == D && u.rows == I && u.cols == D && d.rows == D && d.cols == I &&
                g.ld == lda_gu && u.ld == lda_gu && d.ld == lda_d;
    }
    if (!uniform)  // experts of mixed shapes or dtypes: one at a time through the plain ops
      return moe_experts_per_expert(*this, x, order, counts, n_experts, gate, up, down, out, [&](std::size_t floats) {
        return reinterpret_cast<float*>(moe_workspace(floats * sizeof(float)));
      });
    check_expert_weights(ids, gate, up, down);

    // Groups over the experts sorted by descending count.
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
    struct Group { std::size_t first, size; int64_t rows; };
    std::vector<Group> groups;
    std::vector<int64_t> poff(ids.size());
    int64_t P = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const int64_t c = counts[ids[i]];
      if (groups.empty() || (c * 5 < groups.back().rows * 4 && groups.back().rows - c > 16))
        groups.push_back(Group{i, 0, c});
      poff[i] = P;
      P += groups.back().rows;
      ++groups.back().size;
    }
    const std::size_t ne = ids.size();
    const bool bf16 = dt == DType::bf16;
    const std::size_t es = bf16 ? 2 : 4;
    const int64_t ldx = (D + 7) / 8 * 8, ldi = (I + 7) / 8 * 8;  // 16-byte aligned rows
    auto al = [](std::size_t b) { return (b + 255) / 256 * 256; };
    const std::size_t ptr_bytes = al(9 * ne * sizeof(void*)), pos_bytes = al(P * sizeof(int32_t));
    const std::size_t xb_bytes = al(P * ldx * es), gu_bytes = al(P * ldi * sizeof(float)),
                      h_bytes = al(P * ldi * es), y_bytes = al(P * ldx * sizeof(float));
    char* ws = moe_workspace(ptr_bytes + pos_bytes + xb_bytes + 2 * gu_bytes + h_bytes + y_bytes);
    void** ptrs = reinterpret_cast<void**>(ws);
    int32_t* pos = reinterpret_cast<int32_t*>(ws + ptr_bytes);
    char* xb = ws + ptr_bytes + pos_bytes;
    float* g = reinterpret_cast<float*>(xb + xb_bytes);
    float* u = reinterpret_cast<float*>(xb + xb_bytes + gu_bytes);
    char* h = xb + xb_bytes + 2 * gu_bytes;
    float* yb = reinterpret_cast<float*>(h + h_bytes);

    // Host staging: pointer arrays (per group: gate pointers then up pointers), then the row map.
    staging_.assign(ptr_bytes + P * sizeof(int32_t), 0);
    void** a_gu = reinterpret_cast<void**>(staging_.data());
    void** b_gu = a_gu + 2 * ne;
    void** c_gu = b_gu + 2 * ne;
    void** a_d = c_gu + 2 * ne;
    void** b_d = a_d + ne;
    void** c_d = b_d + ne;
    int32_t* pos_h = reinterpret_cast<int32_t*>(staging_.data() + ptr_bytes);
    for (const Group& gr : groups)
      for (std::size_t k = 0; k < gr.size; ++k) {
        const std::size_t i = gr.first + k;
        const int64_t e = ids[i], r0 = poff[i];
        a_gu[2 * gr.first + k] = const_cast<void*>(gate[e].data);
        a_gu[2 * gr.first + gr.size + k] = const_cast<void*>(up[e].data);
        b_gu[2 * gr.first + k] = b_gu[2 * gr.first + gr.size + k] = xb + r0 * ldx * es;
        c_gu[2 * gr.first + k] = g + r0 * ldi;
        c_gu[2 * gr.first + gr.size + k] = u + r0 * ldi;
        a_d[i] = const_cast<void*>(down[e].data);
        b_d[i] = h + r0 * ldi * es;
        c_d[i] = yb + r0 * ldx;
        for (int64_t r = 0; r < gr.rows; ++r)
          pos_h[r0 + r] = r < counts[e] ? static_cast<int32_t>(start[e] + r) : -1;
      }
    upload(ws, staging_.data(), staging_.size());

    kernels::moe_gather_pad(x, order, pos, P, D, ldx, bf16, xb, stream_);
    DPA_CHECK_LAUNCH();
    const cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const float one = 1.0f, zero = 0.0f;
    const int iD = to_int(D, "moe D"), iI = to_int(I, "moe I");
    for (const Group& gr : groups)
      DPA_CHECK_CUBLAS(cublasGemmBatchedEx(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iI, to_int(gr.rows, "moe rows"), iD, &one,
          const_cast<const void**>(ptrs + 2 * gr.first), ab, to_int(lda_gu, "moe ld"),
          const_cast<const void**>(ptrs + 2 * ne + 2 * gr.first), ab, to_int(ldx, "moe ldx"),
          &zero, ptrs + 4 * ne + 2 * gr.first, CUDA_R_32F, to_int(ldi, "moe ldi"),
          to_int(2 * gr.size, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    kernels::moe_silu_mul(g, u, P * ldi, bf16, h, stream_);
    DPA_CHECK_LAUNCH();
    for (const Group& gr : groups)
      DPA_CHECK_CUBLAS(cublasGemmBatchedEx(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, iD, to_int(gr.rows, "moe rows"), iI, &one,
          const_cast<const void**>(ptrs + 6 * ne + gr.first), ab, to_int(lda_d, "moe ld"),
          const_cast<const void**>(ptrs + 7 * ne + gr.first), ab, to_int(ldi, "moe ldi"), &zero,
          ptrs + 8 * ne + gr.first, CUDA_R_32F, to_int(ldx, "moe ldx"),
          to_int(gr.size, "moe batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    kernels::moe_scatter_pad(yb, ldx, order, pos, P, D, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void moe_gate(const float* logits, int64_t n, const GateParams& p, int32_t* ids,
                float* weights) override {
    const int64_t E = p.n_experts;
    // The same parameter checks, with the same messages, as the CPU reference.
    if (p.top_k <= 0 || p.top_k > E)
      throw Error(fmt::format("moe gate: top_k {} of {} experts", p.top_k, E));
    const bool grouped = p.n_group > 1 && p.method != TopkMethod::greedy;
    if (grouped && (E % p.n_group != 0 || p.topk_group <= 0 || p.topk_group > p.n_group))
      throw Error(fmt::format("moe gate: {} experts in {} groups, topk_group {}", E, p.n_group,
                              p.topk_group));
    if (n <= 0) return;
    kernels::GateArgs a;
    a.n_experts = E;
    a.top_k = p.top_k;
    a.n_group = p.n_group;
    a.topk_group = p.topk_group;
    a.sigmoid = p.scoring == Scoring::sigmoid;
    a.grouped = grouped;
    a.noaux_tc = p.method == TopkMethod::noaux_tc;
    a.norm_topk_prob = p.norm_topk_prob;
    a.routed_scaling_factor = p.routed_scaling_factor;
    a.correction_bias = p.correction_bias;
    kernels::moe_gate(logits, n, a, ids, weights, stream_);
    DPA_CHECK_LAUNCH();
  }

  void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
                int64_t* counts) override {
    if (n_experts <= 0) return;
    const std::size_t need = static_cast<std::size_t>(n_experts + 1);
    if (need > counts_elems_) {
      if (counts_dev_) DPA_CHECK_CUDA(cudaFree(counts_dev_));
      counts_dev_ = static_cast<int64_t*>(alloc(need * sizeof(int64_t)));
      counts_elems_ = need;
    }
    if (n_slots <= 0) {
      std::memset(counts, 0, static_cast<std::size_t>(n_experts) * sizeof(int64_t));
      synchronize();
      return;
    }
    kernels::moe_sort(ids, n_slots, n_experts, order, counts_dev_, stream_);
    DPA_CHECK_LAUNCH();
    counts_host_.resize(need);
    download(counts_host_.data(), counts_dev_, need * sizeof(int64_t));
    if (counts_host_[n_experts])
      throw Error(fmt::format("moe sort: expert id outside [0, {})", n_experts));
    std::memcpy(counts, counts_host_.data(), static_cast<std::size_t>(n_experts) * sizeof(int64_t));
  }

  void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out) override {
    if (n <= 0 || d <= 0) return;
    kernels::gather_rows(x, rows, 1, n, d, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void gather_rows_div(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                       float* out) override {
    if (n <= 0 || d <= 0) return;
    if (div <= 0) throw Error(fmt::format("cuda backend gather_rows_div: divisor {}", div));
    kernels::gather_rows(x, rows, div, n, d, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d,
                    float* out) override {
    if (n <= 0 || d <= 0) return;
    kernels::scatter_rows(x, rows, n, d, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void moe_combine(const float* y, const float* weights, int64_t n, int64_t top_k, int64_t d,
                   float* out) override {
    if (n <= 0 || d <= 0 || top_k <= 0) return;
    kernels::moe_combine(y, weights, n, top_k, d, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) override {
    if (n <= 0) return;
    kernels::argmax(logits, n, vocab, out, stream_);
    DPA_CHECK_LAUNCH();
  }

  void edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) override {
    if (n <= 0) return;
    kernels::edit_logits(logits, vocab, reinterpret_cast<const kernels::LogitEditArgs*>(edits), n, stream_);
    DPA_CHECK_LAUNCH();
  }

  void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs, SampleOut* out) override {
    if (n <= 0) return;
    kernels::sample(logits, n, vocab, reinterpret_cast<const kernels::SampleSpecArgs*>(specs),
                    sampling_fixed_bits(vocab), reinterpret_cast<kernels::SampleOutArgs*>(out), stream_);
    DPA_CHECK_LAUNCH();
  }

 private:
  std::vector<cudaEvent_t> mark_events_;  // phase marks, reused across steps
  std::vector<const char*> mark_names_;
  std::size_t n_marks_ = 0;
  static bool is_device(const void* p) {
    if (!p) return false;
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  }

  // Whether p lies inside a weight prepare_weight copied (a map lookup: this runs for every
  // weight of every op, so no driver call), else whether the driver says device memory.
  bool on_device(const void* p) const {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = prepared_.upper_bound(a);
      if (it != prepared_.begin() && a < std::prev(it)->first + std::prev(it)->second) return true;
    }
    return is_device(p);
  }

  // Weights must be prepared (device memory) and of a supported dtype.
  void check_weight(const WeightView& w, const char* op) const {
    if (!supports_weight(w.dtype))
      throw Error(fmt::format("cuda backend {}: weight dtype {} not supported", op,
                              dtype_name(w.dtype)));
    if (w.rows > 0 && w.cols > 0 && !on_device(w.data))
      throw Error(fmt::format("cuda backend {}: weight [{} x {}] is not in device memory (call "
                              "prepare_weight first)", op, w.rows, w.cols));
  }

  // linear's bf16 activation workspace, grown (never shrunk) to `count` elements.
  uint16_t* bf16_workspace(std::size_t count) {
    if (count > bf16_ws_elems_) {
      if (bf16_ws_) DPA_CHECK_CUDA(cudaFree(bf16_ws_));  // synchronizes: nothing still reads it
      bf16_ws_ = static_cast<uint16_t*>(alloc(count * sizeof(uint16_t)));
      bf16_ws_elems_ = count;
    }
    return bf16_ws_;
  }

  // moe_experts' workspace, grown (never shrunk).
  char* moe_workspace(std::size_t bytes) {
    if (bytes > moe_ws_bytes_) {
      if (moe_ws_) DPA_CHECK_CUDA(cudaFree(moe_ws_));  // synchronizes: nothing still uses it
      moe_ws_ = static_cast<char*>(alloc(bytes));
      moe_ws_bytes_ = bytes;
    }
    return moe_ws_;
  }

  void check_expert_weights(const std::vector<int64_t>& ids, const WeightView* gate,
                            const WeightView* up, const WeightView* down) const {
    for (int64_t e : ids) {
      check_weight(gate[e], "moe_experts gate");
      check_weight(up[e], "moe_experts up");
      check_weight(down[e], "moe_experts down");
    }
  }

  // Attention's workspace (split-KV partials, or the GEMM form's gathered cache and scores),
  // grown (never shrunk) to `floats`; null for none. One op uses it at a time, in stream order.
  float* scratch(int64_t floats) {
    if (floats <= 0) return nullptr;
    if (static_cast<std::size_t>(floats) > attn_ws_floats_) {
      if (attn_ws_) DPA_CHECK_CUDA(cudaFree(attn_ws_));  // synchronizes: nothing still uses it
      attn_ws_ = static_cast<float*>(alloc(static_cast<std::size_t>(floats) * sizeof(float)));
      attn_ws_floats_ = static_cast<std::size_t>(floats);
    }
    return attn_ws_;
  }

  enum class AttnMode { automatic, kernel, gemm };
  static constexpr int64_t kGemmMinCtx = 256;      // visible keys from which "auto" takes GEMMs
  static constexpr int64_t kScoreCap = 32 << 20;  // score floats per query chunk (128 MiB)
  static bool kv_bf16(DType dtype) {
    if (dtype != DType::f32 && dtype != DType::bf16)
      throw Error(fmt::format("cuda backend: {} KV cache not supported", dtype_name(dtype)));
    return dtype == DType::bf16;
  }
  bool use_gemm(int64_t n_ctx) const {
    if (n_ctx <= 0) return false;
    return attn_mode_ == AttnMode::gemm || (attn_mode_ == AttnMode::automatic && n_ctx >= kGemmMinCtx);
  }

  // Row-major Y[n, m] = X[n, k] · A^T with A row-major [m, k] (stride lda), X stride ldx, Y stride
  // ldy (= linear's mapping onto column-major SGEMM); beta 0 or 1.
  void sgemm_xat(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* x,
                 int64_t ldx, float beta, float* y, int64_t ldy) {
    const float one = 1.0f;
    DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, to_int(m, "m"), to_int(n, "n"),
                                 to_int(k, "k"), &one, a, to_int(lda, "lda"), x, to_int(ldx, "ldx"),
                                 &beta, y, to_int(ldy, "ldy")));
  }

  // Absorbed MLA as GEMMs: the sequence's cache rows gathered into C [n_ctx, W], then per chunk of
  // queries S = Q_lat·C_lat^T + Q_pe·C_pe^T, P = causal softmax(scale·S), O = P·C_lat.
  void mla_gemm(const float* q_lat, const float* q_pe, int64_t n_q, int64_t H,
                const PagedLatent& cache, int64_t q_start, float scale, float* out) {
    const AttentionMath math(cublas_, attention_tf32_);
    const int64_t L = cache.kv_lora, R = cache.rope_dim, W = L + R, n_ctx = q_start + n_q;
    const int64_t qc = std::clamp<int64_t>(kScoreCap / (H * n_ctx), 1, n_q);
    float* c = scratch(n_ctx * W + qc * H * n_ctx);
    float* sc = c + n_ctx * W;
    kernels::paged_gather(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size, W, 0, W,
                          n_ctx, c, W, 1, 0, stream_);
    DPA_CHECK_LAUNCH();
    const float one = 1.0f, zero = 0.0f;
    for (int64_t i0 = 0; i0 < n_q; i0 += qc) {
      const int64_t i1 = std::min(n_q, i0 + qc), rows = (i1 - i0) * H, n_cols = q_start + i1;
      sgemm_xat(n_cols, rows, L, c, W, q_lat + i0 * H * L, L, 0.0f, sc, n_cols);
      if (R > 0) sgemm_xat(n_cols, rows, R, c + L, W, q_pe + i0 * H * R, R, 1.0f, sc, n_cols);
      kernels::masked_softmax(sc, rows, n_cols, n_cols, H, n_q, q_start + i0, scale, stream_);
      DPA_CHECK_LAUNCH();
      // Row-major O[rows, L] = P[rows, n_cols] · C_lat[n_cols, L] is, column-major,
      // O^T = C_lat^T (L x n_cols, ld W) · P^T (n_cols x rows, ld n_cols).
      DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, to_int(L, "L"),
                                   to_int(rows, "rows"), to_int(n_cols, "n_cols"), &one, c,
                                   to_int(W, "W"), sc, to_int(n_cols, "n_cols"), &zero,
                                   out + i0 * H * L, to_int(L, "L")));
    }
  }

  // Expanded attention as head-batched GEMMs: per chunk of queries and head h,
  // S_h = Q_h·K_h^T, P_h = causal softmax(scale·S_h), O_h = P_h·V_h (scores laid out [H][q][key]).
  void attention_gemm(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                      int64_t H, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                      float* out) {
    const AttentionMath math(cublas_, attention_tf32_);
    const int64_t n_ctx = std::min(q_start + n_q, n_kv);
    const int64_t qc = std::clamp<int64_t>(kScoreCap / (H * n_ctx), 1, n_q);
    float* sc = scratch(qc * H * n_ctx);
    const float one = 1.0f, zero = 0.0f;
    const int hh = to_int(H, "heads"), ldq = to_int(H * d_qk, "H*d_qk"), ldv = to_int(H * d_v, "H*d_v");
    for (int64_t i0 = 0; i0 < n_q; i0 += qc) {
      const int64_t i1 = std::min(n_q, i0 + qc), nq = i1 - i0;
      const int64_t n_cols = std::min(n_kv, q_start + i1);
      DPA_CHECK_CUBLAS(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, to_int(n_cols, "n_cols"), to_int(nq, "nq"),
          to_int(d_qk, "d_qk"), &one, k, ldq, d_qk, q + i0 * H * d_qk, ldq, d_qk, &zero, sc,
          to_int(n_cols, "n_cols"), nq * n_cols, hh));
      kernels::masked_softmax(sc, H * nq, n_cols, n_cols, 1, nq, q_start + i0, scale, stream_);
      DPA_CHECK_LAUNCH();
      DPA_CHECK_CUBLAS(cublasSgemmStridedBatched(
          cublas_, CUBLAS_OP_N, CUBLAS_OP_N, to_int(d_v, "d_v"), to_int(nq, "nq"),
          to_int(n_cols, "n_cols"), &one, v, ldv, d_v, sc, to_int(n_cols, "n_cols"), nq * n_cols,
          &zero, out + i0 * H * d_v, ldv, d_v, hh));
    }
  }

  static void check_dims(int64_t d_qk, int64_t d_v, const char* op) {
    if (d_qk + d_v > kernels::attention_max_dims())
      throw Error(fmt::format("cuda backend {}: head dims {} + {} exceed {}", op, d_qk, d_v,
                              kernels::attention_max_dims()));
  }

  static int to_int(int64_t v, const char* what) {
    if (v < 0 || v > INT32_MAX) throw Error(fmt::format("cuda backend: {} = {} does not fit cuBLAS's int", what, v));
    return static_cast<int>(v);
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  mutable std::mutex mu_;
  std::map<std::tuple<const void*, DType, int64_t, int64_t, int64_t>, void*> weights_;
  std::map<std::uintptr_t, std::size_t> prepared_;  // device copies of weights: start -> bytes
  uint16_t* bf16_ws_ = nullptr;  // bf16 copy of linear's activations
  std::size_t bf16_ws_elems_ = 0;
  AttnMode attn_mode_ = AttnMode::automatic;
  int mla_decode_variant_ = 2;
  bool attention_tf32_ = false;
  int mla_bf16_stages_ = 2;
  float* attn_ws_ = nullptr;  // scratch(): attention's workspace
  std::size_t attn_ws_floats_ = 0;
  int64_t* counts_dev_ = nullptr;  // moe_sort's counts and error flag
  std::size_t counts_elems_ = 0;
  std::vector<int64_t> counts_host_;
  char* moe_ws_ = nullptr;  // moe_experts: pointer arrays, row map and padded activations
  std::size_t moe_ws_bytes_ = 0;
  std::vector<char> staging_;  // moe_experts' host side of the pointer arrays and row map
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_ordinal) {
  return std::make_unique<CudaBackend>(device_ordinal);
}

}  // namespace dpa::backend
