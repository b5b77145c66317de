// The CUDA side of the check-macro family (DPA_CHECK_MPI lives in dist/runtime.h): each prints
// rank, host, device, the expression, file:line and the library's own message, then aborts the
// job. Header-only, so core itself never links CUDA; include it only from CUDA-aware code.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define DPA_CHECK_CUDA(expr)                                                                \
  do {                                                                                      \
    cudaError_t dpa_cuda_rc_ = (expr);                                                      \
    if (dpa_cuda_rc_ != cudaSuccess)                                                        \
      ::dpa::fail_one("CUDA", #expr, __FILE__, __LINE__, cudaGetErrorString(dpa_cuda_rc_)); \
  } while (0)

// After every kernel launch: the launch error (bad configuration) or a sticky error.
#define DPA_CHECK_LAUNCH() DPA_CHECK_CUDA(cudaGetLastError())

#define DPA_CHECK_CUBLAS(expr)                                                                   \
  do {                                                                                           \
    cublasStatus_t dpa_cublas_rc_ = (expr);                                                      \
    if (dpa_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::dpa::fail_one("cuBLAS", #expr, __FILE__, __LINE__, cublasGetStatusString(dpa_cublas_rc_)); \
  } while (0)

#ifdef DPA_HAVE_NCCL
#include <nccl.h>
#define DPA_CHECK_NCCL(expr)                                                                 \
  do {                                                                                       \
    ncclResult_t dpa_nccl_rc_ = (expr);                                                      \
    if (dpa_nccl_rc_ != ncclSuccess)                                                         \
      ::dpa::fail_one("NCCL", #expr, __FILE__, __LINE__,                                     \
                      std::string(ncclGetErrorString(dpa_nccl_rc_)) + " / " + ncclGetLastError(nullptr)); \
  } while (0)
#endif
