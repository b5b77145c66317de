// CUDA backend: embedding, norms, linear layers (cuBLAS), elementwise ops, copies, argmax, sampling.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"
#include "kernels/argmax.cuh"
#include "kernels/batched_ops.cuh"
#include "kernels/convert.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/embedding.cuh"
#include "kernels/gather_scatter.cuh"
#include "kernels/linear_small.cuh"
#include "kernels/rms_norm.cuh"
#include "kernels/sample.cuh"

namespace dpa::backend {

// The sampling structs cross into the kernels as their mirrors there.
static_assert(sizeof(LogitEdit) == sizeof(kernels::LogitEditArgs) &&
              offsetof(LogitEdit, subtract) == offsetof(kernels::LogitEditArgs, subtract));
static_assert(sizeof(SampleSpec) == sizeof(kernels::SampleSpecArgs) &&
              offsetof(SampleSpec, u) == offsetof(kernels::SampleSpecArgs, u) &&
              offsetof(SampleSpec, n_top) == offsetof(kernels::SampleSpecArgs, n_top) &&
              offsetof(SampleSpec, forced) == offsetof(kernels::SampleSpecArgs, forced));
static_assert(sizeof(SampleOut) == sizeof(kernels::SampleOutArgs) &&
              offsetof(SampleOut, top_token) == offsetof(kernels::SampleOutArgs, top_token) &&
              offsetof(SampleOut, top_logprob) == offsetof(kernels::SampleOutArgs, top_logprob) &&
              kMaxTopLogprobs == kernels::kSampleMaxTop);

void CudaBackend::embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) {
  if (n <= 0) return;
  check_weight(table, "embedding");
  kernels::embedding(table.data, table.dtype == DType::bf16, table.rows, table.cols, table.ld,
                     ids, n, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::rms_norm(const float* x, const WeightView& w, int64_t n, float eps, float* out) {
  if (n <= 0) return;
  check_weight(w, "rms_norm");
  kernels::rms_norm(x, w.data, w.dtype == DType::bf16, n, w.cols, eps, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::add_rms_norm(float* residual, const float* x, const WeightView& w, int64_t n, float eps,
                               float* out) {
  if (n <= 0) return;
  check_weight(w, "add_rms_norm");
  kernels::add_rms_norm(residual, x, w.data, w.dtype == DType::bf16, n, w.cols, eps, out,
                        stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::linear(const float* x, int64_t n, const WeightView& w, float* y) {
  const LinearOut o{&w, y};
  linear_many(x, n, {&o, 1});
}

void CudaBackend::linear_many(const float* x, int64_t n, std::span<const LinearOut> outs) {
  linear_many_from(x, nullptr, n, outs);
}

void CudaBackend::norm_linear(float* residual, const float* x, const WeightView& w, int64_t n, float eps, float* out,
                              std::span<const LinearOut> outs) {
  if (n <= 0) return;
  check_weight(w, "norm_linear");
  // The rows rounded as the norm writes them, where linear_many would round them: a bf16 weight
  // of the norm's width that the small-row kernel does not take.
  bool round = false;
  for (const LinearOut& o : outs) {
    const WeightView& lw = *o.w;
    if (lw.rows <= 0 || lw.cols <= 0) continue;
    if (lw.dtype != DType::bf16 || lw.cols != w.cols) break;
    round = !small_linear_takes(small_linear_args(out, lw.cols, 0, n, lw, 0, 1, o.y, lw.rows, 0), lw);
    break;
  }
  uint16_t* xb = round ? bf16_workspace(static_cast<std::size_t>(n * w.cols)) : nullptr;
  kernels::add_rms_norm(residual, x, w.data, w.dtype == DType::bf16, n, w.cols, eps, out, stream_, xb);
  DPA_CHECK_LAUNCH();
  linear_many_from(out, xb, n, outs);
}

void CudaBackend::linear_many_from(const float* x, const uint16_t* rounded, int64_t n,
                                   std::span<const LinearOut> outs) {
  if (n <= 0) return;
  // rounded: x rounded to bf16 (from the caller, or for the first weight that needed it); x null:
  // only those (bf16 weights, cuBLAS)
  for (const LinearOut& o : outs) {
    const WeightView& w = *o.w;
    if (w.rows <= 0) continue;
    if (w.cols != outs[0].w->cols) throw Error("linear_many: the weights differ in width");
    if (w.cols <= 0) {
      fill_zero(o.y, static_cast<std::size_t>(n * w.rows) * sizeof(float));
      continue;
    }
    check_weight(w, "linear");
    const int m = to_int(w.rows, "linear rows"), nn = to_int(n, "linear n"), k = to_int(w.cols, "linear cols"),
              lda = to_int(w.ld, "linear ld");
    const float one = 1.0f, zero = 0.0f;
    if (w.dtype == DType::f32) {
      DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one,
                                   static_cast<const float*>(w.data), lda, x, k, &zero, o.y, m));
    } else if (!x || !small_linear(x, w.cols, 0, n, w, 0, 1, o.y, w.rows, 0)) {  // else a decode step's rows: done
      if (!rounded) {
        const std::size_t count = static_cast<std::size_t>(n * w.cols);
        uint16_t* ws = bf16_workspace(count);
        kernels::f32_to_bf16(x, ws, static_cast<int64_t>(count), stream_);
        DPA_CHECK_LAUNCH();
        rounded = ws;
      }
      DPA_CHECK_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data, CUDA_R_16BF, lda,
                                    rounded, CUDA_R_16BF, k, &zero, o.y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
    }
  }
}

bool CudaBackend::small_linear(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                               int64_t w_stride, int64_t batch, float* y, int64_t ldy, int64_t stride_y) {
  const kernels::SmallLinear a = small_linear_args(x, ldx, stride_x, n, w, w_stride, batch, y, ldy, stride_y);
  if (!small_linear_takes(a, w)) return false;
  kernels::small_linear(a, stream_);
  DPA_CHECK_LAUNCH();
  return true;
}

kernels::SmallLinear CudaBackend::small_linear_args(const float* x, int64_t ldx, int64_t stride_x, int64_t n,
                                                    const WeightView& w, int64_t w_stride, int64_t batch, float* y,
                                                    int64_t ldy, int64_t stride_y) {
  kernels::SmallLinear a;
  a.x = x, a.ldx = ldx, a.stride_x = stride_x, a.w = w.data, a.ldw = w.ld, a.w_stride = w_stride;
  a.y = y, a.ldy = ldy, a.stride_y = stride_y, a.n = n, a.K = w.cols, a.N = w.rows, a.batch = batch;
  return a;
}

bool CudaBackend::small_linear_takes(const kernels::SmallLinear& a, const WeightView& w) const {
  if (small_linear_ == SmallLinearUse::never || w.dtype != DType::bf16 || !kernels::small_linear_supported(a))
    return false;
  return small_linear_ != SmallLinearUse::preferred ||
         2 * a.batch * w.rows * w.cols <= kernels::kSmallLinearMaxWeightBytes;
}

void CudaBackend::copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                         int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  DPA_CHECK_CUDA(cudaMemcpy2DAsync(dst, ldd * sizeof(float), src, lds * sizeof(float),
                                   cols * sizeof(float), rows, cudaMemcpyDeviceToDevice,
                                   stream_));
}

void CudaBackend::linear_batched(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                                 int64_t w_stride, int64_t batch, float* y, int64_t ldy,
                                 int64_t stride_y) {
  linear_batched_from(x, ldx, stride_x, n, w, w_stride, batch, y, ldy, stride_y, nullptr);
}

void CudaBackend::linear_batched_from(const float* x, int64_t ldx, int64_t stride_x, int64_t n, const WeightView& w,
                                      int64_t w_stride, int64_t batch, float* y, int64_t ldy, int64_t stride_y,
                                      const uint16_t* rounded) {
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
  } else if (rounded || !small_linear(x, ldx, stride_x, n, w, w_stride, batch, y, ldy, stride_y)) {
    const uint16_t* xb = rounded;
    if (!xb) {
      uint16_t* ws = bf16_workspace(static_cast<std::size_t>(batch * n * w.cols));
      kernels::strided_to_bf16(x, ldx, stride_x, n, w.cols, batch, ws, stream_);
      DPA_CHECK_LAUNCH();
      xb = ws;
    }
    bf16_gemm_batched(xb, n, w, w_stride, batch, y, false, ldy, stride_y);
  }
}

void CudaBackend::bf16_gemm_batched(const uint16_t* xb, int64_t n, const WeightView& w, int64_t w_stride,
                                    int64_t batch, void* y, bool y_bf16, int64_t ldy, int64_t stride_y) {
  const int m = to_int(w.rows, "linear_batched rows"), nn = to_int(n, "linear_batched n"),
            k = to_int(w.cols, "linear_batched cols"), lda = to_int(w.ld, "linear_batched ld"),
            bc = to_int(batch, "linear_batched batch");
  // With one row the leading dimension is never stepped; cuBLAS still wants it >= m.
  const int ldc = to_int(n == 1 ? std::max(ldy, w.rows) : ldy, "linear_batched ldy");
  const float one = 1.0f, zero = 0.0f;
  DPA_CHECK_CUBLAS(cublasGemmStridedBatchedEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w.data, CUDA_R_16BF,
                                              lda, w_stride, xb, CUDA_R_16BF, k, n * w.cols, &zero, y,
                                              y_bf16 ? CUDA_R_16BF : CUDA_R_32F, ldc, stride_y, bc,
                                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::add(float* y, const float* x, int64_t count) {
  if (count <= 0) return;
  kernels::add(y, x, count, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::silu_mul(const float* gate, const float* up, int64_t count, float* out) {
  if (count <= 0) return;
  kernels::silu_mul(gate, up, count, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) {
  if (n <= 0) return;
  kernels::take_tokens(dst, src, stride, pairs, n, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out) {
  if (n <= 0) return;
  kernels::argmax(logits, n, vocab, out, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::edit_logits(float* logits, int64_t vocab, const LogitEdit* edits, int64_t n) {
  if (n <= 0) return;
  kernels::edit_logits(logits, vocab, reinterpret_cast<const kernels::LogitEditArgs*>(edits), n, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n) {
  if (n <= 0 || vocab <= 0) return;
  kernels::mask_logits(logits, vocab, masks, rows, n, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::sample(const float* logits, int64_t n, int64_t vocab, const SampleSpec* specs, SampleOut* out) {
  if (n <= 0) return;
  kernels::sample(logits, n, vocab, reinterpret_cast<const kernels::SampleSpecArgs*>(specs),
                  sampling_fixed_bits(vocab), reinterpret_cast<kernels::SampleOutArgs*>(out), stream_);
  DPA_CHECK_LAUNCH();
}

}  // namespace dpa::backend
