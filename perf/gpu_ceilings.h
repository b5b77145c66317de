// The machine's ceilings the GPU benchmarks measure themselves against, measured in the same
// process: device-to-device copy bandwidth and the bf16 GEMM rate of cuBLAS.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace dpa::perf {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median GPU milliseconds of `reps` calls of fn on the default stream, after `warmup` calls.
template <class F>
double median_ms(F&& fn, int reps, int warmup = 2, cudaStream_t stream = nullptr) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(e0, stream);
    fn();
    cudaEventRecord(e1, stream);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  return median(t);
}

// Device-to-device copy of 2 GiB: (read + write bytes) / time, GB/s (0 if it cannot allocate).
inline double copy_bandwidth_gbs() {
  const std::size_t bytes = std::size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    cudaFree(a);
    cudaGetLastError();
    return 0;
  }
  cudaMemset(a, 1, bytes);
  const double ms = median_ms([&] { cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice); }, 10);
  cudaFree(a), cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

// cuBLAS bf16 x bf16 -> fp32 GEMM of n x n x n (fp32 accumulation), TFLOP/s.
inline double bf16_gemm_tflops(int n = 8192) {
  const std::size_t elems = static_cast<std::size_t>(n) * n;
  void *a = nullptr, *b = nullptr, *c = nullptr;
  if (cudaMalloc(&a, elems * 2) != cudaSuccess || cudaMalloc(&b, elems * 2) != cudaSuccess ||
      cudaMalloc(&c, elems * 4) != cudaSuccess) {
    cudaFree(a), cudaFree(b);
    cudaGetLastError();
    return 0;
  }
  cudaMemset(a, 0x3c, elems * 2), cudaMemset(b, 0x3c, elems * 2);  // ~1.0 in bf16, no denormals
  cublasHandle_t h;
  cublasCreate(&h);
  const float one = 1.0f, zero = 0.0f;
  const double ms = median_ms([&] {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                 CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }, 10);
  cublasDestroy(h);
  cudaFree(a), cudaFree(b), cudaFree(c);
  return 2.0 * n * static_cast<double>(n) * n / (ms * 1e-3) / 1e12;
}

}  // namespace dpa::perf
