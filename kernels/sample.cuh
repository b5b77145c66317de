// Sampling where the logits are: sparse logit edits (penalties, suppressed ids), then one block
// per row draws a token under temperature / top-k / top-p / min-p with the backend reference's
// arithmetic (integer weight sums, so the picks do not depend on the summation order), and
// gives its logprob and the top logprobs. Only the small per-row result leaves the device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

constexpr int kSampleMaxTop = 20;

// Layouts mirror dpa::backend::LogitEdit / SampleSpec / SampleOut (checked where converted).
struct LogitEditArgs {
  int32_t row, token;
  float repetition, subtract;
};
struct SampleSpecArgs {
  float temperature;
  int32_t top_k;
  float top_p, min_p;
  double u;
  int32_t n_top, forced;
};
struct SampleOutArgs {
  int32_t token;
  float logprob;
  int32_t n_top;
  int32_t rank;
  int32_t top_token[kSampleMaxTop];
  float top_logprob[kSampleMaxTop];
};

void edit_logits(float* logits, int64_t vocab, const LogitEditArgs* edits, int64_t n, cudaStream_t stream);
// Row rows[i]'s tokens whose bit is clear in mask i (ceil(vocab / 32) words, bit t % 32 of word
// t / 32) become -inf.
void mask_logits(float* logits, int64_t vocab, const uint32_t* masks, const int32_t* rows, int64_t n,
                 cudaStream_t stream);
// fixed_bits: the weights' fraction bits (backend::sampling_fixed_bits(vocab)).
void sample(const float* logits, int64_t n, int64_t vocab, const SampleSpecArgs* specs, int fixed_bits,
            SampleOutArgs* out, cudaStream_t stream);

}  // namespace dpa::kernels
