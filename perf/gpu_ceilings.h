// What the GPU benchmarks share: their timing (CUDA events; the median and the check in
// bench_util.h) and the bf16 GEMM rate of cuBLAS they measure themselves against in the same
// process. The copy bandwidth is the CUDA backend's (Backend::copy_bandwidth_gbs, the denominator
// of dpa_serve's decode floor too).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"

namespace dpa::perf {

// Device 0's properties, or false after a line on stderr when there is no CUDA device (the
// benches then exit 77: skipped).
inline bool first_gpu(const char* bench, cudaDeviceProp& prop) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "%s: no CUDA device\n", bench);
    return false;
  }
  cudaGetDeviceProperties(&prop, 0);
  return true;
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
