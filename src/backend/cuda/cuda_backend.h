// The CUDA backend: every op of Backend on one GPU, queued on one non-blocking stream. Kernels
// live in kernels/ (one op per file); linear is cuBLAS (f32: SGEMM without TF32; bf16: the
// activations rounded to bf16, bf16 x bf16 -> f32 with fp32 accumulation); linear_batched is one
// strided-batched GEMM; mla_decode is kernels/mla_decode (all heads of a sequence per pass over
// its paged cache); moe_experts is batched GEMMs over row-count groups of experts. Only built with
// DPA_CUDA; callers guard with #ifdef DPA_HAVE_CUDA.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace dpa::backend {

// A CUDA backend on GPU `device_ordinal` (made current for the calling thread).
std::unique_ptr<Backend> make_cuda_backend(int device_ordinal);

}  // namespace dpa::backend
