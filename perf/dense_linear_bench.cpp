// The dense linear layers of a decode step (bf16 weights, f32 activations, 1 to 64 rows) on one
// GPU, in both forms of the CUDA backend: `small` (kernels/linear_small, the tensor-core kernel
// that reads the f32 rows as they are: DPA_CUDA_SMALL_LINEAR=force, for n <= 64 whatever the
// weights' size) and `cublas` (DPA_CUDA_SMALL_LINEAR=0: the rows copied to bf16, then cuBLAS).
// This times every decode-step shape in both forms: the kernel's tuning and the weight size up to
// which the backend takes it by default (kernels::kSmallLinearMaxWeightBytes) come from it. Shapes: DeepSeek-V2-
// Lite's and DeepSeek-V3's projections (linear) and the absorbed MLA's per-head W_UK and W_UV
// products (linear_batched over every head, with the strides and weight layout of
// src/model/attention.cpp), the weights random bf16. Each form is its own backend (the variable is
// read when one is made), made per shape and dropped after it, so that one shape's weights at a
// time are on the GPU. First checks, for every shape and row count, the two forms against each
// other (and V2-Lite's q_proj at 8 rows against the CPU reference), then times them: CUDA events
// on the backend's stream around 8 back-to-back calls recorded in a CUDA graph (the GPU's time, as
// in a decode step replayed from a graph; --eager: queued one by one, host launch costs included),
// median of --reps after warm-up, over enough copies of the weight (>= 200 MiB in all up to 512
// copies, each call the next copy) that the 50 MB L2 holds none of it; the weight bytes of one call
// over that time against the copy bandwidth.
//   dense_linear_bench [--reps N] [--rows N,N...] [--model v2-lite|v3|all] [--eager] [--json]
// (rows: default 1,8,16,32,64, at most 64; model: default all)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "gpu_ceilings.h"

namespace {

using dpa::DType;
using dpa::backend::Backend;
using dpa::backend::Buffer;
using dpa::backend::WeightView;

// MLA's head dimensions, the same in both models: q_nope, q_rope, v, kv_lora.
constexpr int64_t kNope = 128, kRope = 64, kDv = 128, kLora = 512, kDqk = kNope + kRope;
constexpr int64_t kMaxRows = 64;  // the most rows the small kernel takes (kernels::kSmallLinearRows)
constexpr int kCallsPerRep = 8;   // calls between a timing's two events
constexpr std::size_t kMaxGraphs = 64;  // graphs of kCallsPerRep calls each, cycled through
constexpr double kCopiesBytes = 200.0 * (1 << 20);  // the copies of a weight cycled through, at least
constexpr int64_t kCopyShift = 8;  // host elements between copies (distinct views, so distinct device copies)

// plain: linear; w_uk, w_uv: linear_batched over the heads as Model::attention calls it.
enum class Kind { plain, w_uk, w_uv };

struct Shape {
  const char* model;
  const char* op;
  Kind kind;
  int64_t heads, N, K;  // per head: W [N, K], y = x · W^T

  double weight_bytes() const { return 2.0 * static_cast<double>(heads * N * K); }
  // The matrix prepared per copy: the weight itself; W_UK^T [heads * kv_lora, nope] (the model's
  // w_uk_, a row slice of it per call); or kv_b_proj [heads * (nope + v), kv_lora], whose v rows
  // of each head are W_UV (a slice of it per call, the heads (nope + v) rows apart).
  int64_t mat_rows() const {
    return kind == Kind::plain ? N : kind == Kind::w_uk ? heads * kLora : heads * (kNope + kDv);
  }
  int64_t mat_cols() const { return kind == Kind::plain ? K : kind == Kind::w_uk ? kNope : kLora; }
  WeightView view(const WeightView& mat) const {
    return kind == Kind::plain  ? mat
           : kind == Kind::w_uk ? mat.row_slice(0, kLora)
                                : mat.row_slice(kNope, kNope + kDv);
  }
  int64_t w_stride() const {
    return kind == Kind::plain ? 0 : kind == Kind::w_uk ? kLora * kNope : (kNope + kDv) * kLora;
  }
  // Activations: w_uk reads q [n, heads, nope + rope] (the nope part of each head), w_uv the
  // attended latents [n, heads, kv_lora]; y is [n, heads, N] either way.
  int64_t ldx() const { return kind == Kind::plain ? K : kind == Kind::w_uk ? heads * kDqk : heads * kLora; }
  int64_t stride_x() const { return kind == Kind::plain ? 0 : kind == Kind::w_uk ? kDqk : kLora; }
  int64_t y_cols() const { return heads * N; }
};

std::vector<Shape> model_shapes(const std::string& model) {
  std::vector<Shape> s;
  if (model == "v2-lite" || model == "all")
    s.insert(s.end(), {{"v2-lite", "q_proj", Kind::plain, 1, 3072, 2048},
                       {"v2-lite", "kv_a_proj", Kind::plain, 1, 576, 2048},
                       {"v2-lite", "w_uk", Kind::w_uk, 16, kLora, kNope},
                       {"v2-lite", "w_uv", Kind::w_uv, 16, kDv, kLora},
                       {"v2-lite", "o_proj", Kind::plain, 1, 2048, 2048},
                       {"v2-lite", "router", Kind::plain, 1, 64, 2048},
                       {"v2-lite", "dense_gate", Kind::plain, 1, 10944, 2048},
                       {"v2-lite", "dense_down", Kind::plain, 1, 2048, 10944}});
  if (model == "v3" || model == "all")
    s.insert(s.end(), {{"v3", "q_a_proj", Kind::plain, 1, 1536, 7168},
                       {"v3", "q_b_proj", Kind::plain, 1, 24576, 1536},
                       {"v3", "kv_a_proj", Kind::plain, 1, 576, 7168},
                       {"v3", "w_uk", Kind::w_uk, 128, kLora, kNope},
                       {"v3", "w_uv", Kind::w_uv, 128, kDv, kLora},
                       {"v3", "o_proj", Kind::plain, 1, 7168, 16384},
                       {"v3", "router", Kind::plain, 1, 256, 7168},
                       {"v3", "dense_gate", Kind::plain, 1, 18432, 7168},
                       {"v3", "dense_down", Kind::plain, 1, 7168, 18432}});
  return s;
}

// A shape's weight on the host: `copies` overlapping views of mat_rows x mat_cols, kCopyShift
// elements apart, filled by repeating one random block (uniform(-0.03, 0.03), bf16).
struct HostWeight {
  std::vector<uint16_t> data;
  int copies = 1;
  WeightView copy(const Shape& s, int c) const {
    return WeightView::dense(data.data() + c * kCopyShift, DType::bf16, s.mat_rows(), s.mat_cols());
  }
};

HostWeight host_weight(const Shape& s, int copies, const std::vector<uint16_t>& block) {
  HostWeight h;
  h.copies = copies;
  h.data.resize(static_cast<std::size_t>(s.mat_rows() * s.mat_cols() + (copies - 1) * kCopyShift));
  for (std::size_t i = 0; i < h.data.size(); i += block.size())
    std::memcpy(h.data.data() + i, block.data(),
                std::min(block.size(), h.data.size() - i) * sizeof(uint16_t));
  return h;
}

// One form: its backend, the weight's copies prepared on it, its rows (max_n) and output.
struct Form {
  std::unique_ptr<Backend> be;
  std::vector<WeightView> w;
  Buffer<float> x, y;
};

Form make_form(bool small, const Shape& s, const HostWeight& hw, const std::vector<float>& x, int64_t max_n) {
  setenv("DPA_CUDA_SMALL_LINEAR", small ? "force" : "0", 1);  // read by the backend's constructor
  Form f;
  f.be = dpa::backend::make_cuda_backend(0);
  for (int c = 0; c < hw.copies; ++c) f.w.push_back(s.view(f.be->prepare_weight(hw.copy(s, c))));
  f.x = Buffer<float>(*f.be, x.size());
  f.y = Buffer<float>(*f.be, static_cast<std::size_t>(max_n * s.y_cols()));
  f.be->upload(f.x.data(), x.data(), x.size() * sizeof(float));
  f.be->synchronize();
  return f;
}

void call(Form& f, const Shape& s, std::size_t copy, int64_t n) {
  if (s.kind == Kind::plain)
    f.be->linear(f.x.data(), n, f.w[copy], f.y.data());
  else
    f.be->linear_batched(f.x.data(), s.ldx(), s.stride_x(), n, f.w[copy], s.w_stride(), s.heads, f.y.data(),
                         s.y_cols(), s.N);
}

std::vector<float> output(Form& f, const Shape& s, int64_t n) {
  call(f, s, 0, n);
  std::vector<float> y(static_cast<std::size_t>(n * s.y_cols()));
  f.be->download(y.data(), f.y.data(), y.size() * sizeof(float));
  return y;
}

double rel_diff(const std::vector<float>& got, const std::vector<float>& ref) {
  return dpa::perf::max_rel_error(got.data(), ref.data(), ref.size());
}

std::vector<float> random_rows(const Shape& s, int64_t max_n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(max_n * s.ldx()));
  for (auto& v : x) v = u(rng);
  return x;
}

struct Check {
  double worst = 0;  // small vs cuBLAS, the largest
  std::string where;
  int compared = 0;
};

// Both forms on the first copy of s for each row count: the small one against cuBLAS's.
void check_shape(const Shape& s, const std::vector<int64_t>& rows, const std::vector<uint16_t>& block,
                 std::mt19937& rng, Check& c) {
  const int64_t max_n = *std::max_element(rows.begin(), rows.end());
  const HostWeight hw = host_weight(s, 1, block);
  const std::vector<float> x = random_rows(s, max_n, rng);
  Form small = make_form(true, s, hw, x, max_n), cublas = make_form(false, s, hw, x, max_n);
  for (int64_t n : rows) {
    const double rel = rel_diff(output(small, s, n), output(cublas, s, n));
    ++c.compared;
    if (rel == 0)
      std::fprintf(stderr,
                   "dense_linear_bench: %s %s n=%lld: small and cuBLAS outputs identical (did the small "
                   "kernel take it?)\n",
                   s.model, s.op, static_cast<long long>(n));
    if (!(rel <= c.worst))
      c.worst = rel, c.where = std::string(s.model) + " " + s.op + " n=" + std::to_string(n);
  }
}

// V2-Lite's q_proj at 8 rows in both forms against the CPU reference: the larger max rel error.
double check_cpu(const std::vector<uint16_t>& block, std::mt19937& rng) {
  const Shape s = model_shapes("v2-lite")[0];
  const int64_t n = 8;
  const HostWeight hw = host_weight(s, 1, block);
  const std::vector<float> x = random_rows(s, n, rng);
  auto cpu = dpa::backend::make_cpu_backend();
  std::vector<float> ref(static_cast<std::size_t>(n * s.N));
  cpu->linear(x.data(), n, hw.copy(s, 0), ref.data());
  Form small = make_form(true, s, hw, x, n), cublas = make_form(false, s, hw, x, n);
  return std::max(rel_diff(output(small, s, n), ref), rel_diff(output(cublas, s, n), ref));
}

// Microseconds per call: kCallsPerRep calls back to back, each on the next copy of the weight.
// Graphs (the default): the calls recorded once per group of copies and replayed, so the time is
// the GPU's alone, as in a decode step replayed from a graph; eager: queued one by one, so that a
// call shorter than its launch on the host counts the launch (cuBLAS's path is two launches and
// its own host work).
double time_us(Form& f, const Shape& s, int64_t n, int reps, bool eager) {
  const auto stream = static_cast<cudaStream_t>(f.be->stream());
  std::size_t next = 0;
  if (eager) {
    const double ms = dpa::perf::median_ms(
        [&] {
          for (int i = 0; i < kCallsPerRep; ++i) {
            call(f, s, next, n);
            next = (next + 1) % f.w.size();
          }
        },
        reps, 2, stream);
    return ms * 1e3 / kCallsPerRep;
  }
  call(f, s, 0, n);  // workspaces sized before recording (a reallocation cannot be recorded)
  f.be->synchronize();
  std::vector<void*> graphs;
  for (std::size_t c = 0; c < f.w.size() && graphs.size() < kMaxGraphs; c += kCallsPerRep) {
    if (!f.be->capture_begin()) throw std::runtime_error("cannot record a graph");
    for (int i = 0; i < kCallsPerRep; ++i) call(f, s, (c + i) % f.w.size(), n);
    void* g = f.be->capture_end();
    if (!g) throw std::runtime_error("recording a graph failed");
    graphs.push_back(g);
  }
  const double ms = dpa::perf::median_ms(
      [&] {
        f.be->replay(graphs[next]);
        next = (next + 1) % graphs.size();
      },
      reps, 2, stream);
  for (void* g : graphs) f.be->drop_graph(g);
  return ms * 1e3 / kCallsPerRep;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  bool json = false, eager = false;
  std::string model = "all";
  std::vector<int64_t> rows{1, 8, 16, 32, 64};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--json") {
      json = true;
    } else if (a == "--eager") {
      eager = true;
    } else if (a == "--model" && i + 1 < argc && model_shapes(argv[i + 1]).size() > 0) {
      model = argv[++i];
    } else if (a == "--rows" && i + 1 < argc) {
      rows.clear();
      for (const std::string& t : dpa::perf::split_list(argv[++i])) {
        const long long v = std::atoll(t.c_str());
        if (v <= 0 || v > kMaxRows) {
          std::fprintf(stderr, "dense_linear_bench: --rows: '%s' is not a count of 1 to %lld\n", t.c_str(),
                       static_cast<long long>(kMaxRows));
          return 2;
        }
        rows.push_back(v);
      }
      if (rows.empty()) {
        std::fprintf(stderr, "dense_linear_bench: --rows: no counts\n");
        return 2;
      }
    } else {
      std::fprintf(
          stderr, "usage: dense_linear_bench [--reps N] [--rows N,N...] [--model v2-lite|v3|all] [--eager] [--json]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  if (!dpa::perf::first_gpu("dense_linear_bench", prop)) return 77;
  try {
    setenv("DPA_CUDA_SMALL_LINEAR", "1", 1);
    const double bw = dpa::backend::make_cuda_backend(0)->copy_bandwidth_gbs();
    std::mt19937 rng(7);
    std::vector<uint16_t> block(std::size_t{1} << 21);  // 4 MiB, repeated through every weight
    std::uniform_real_distribution<float> u(-0.03f, 0.03f);
    for (auto& v : block) v = dpa::f32_to_bf16(u(rng));

    const std::vector<Shape> shapes = model_shapes(model);
    Check c;
    for (const Shape& s : shapes) check_shape(s, rows, block, rng, c);
    const double cpu_rel = check_cpu(block, rng);
    const bool ok = c.worst <= 1e-2 && cpu_rel <= 2e-2;
    std::printf(
        "dense_linear_bench on %s: copy %.0f GB/s; check small vs cuBLAS: max rel %.2e (%s; bound 1e-2) "
        "over %d (shape, n), v2-lite q_proj n=8 vs CPU: max rel %.2e (bound 2e-2) %s\n",
        prop.name, bw, c.worst, c.where.c_str(), c.compared, cpu_rel, ok ? "OK" : "FAIL");
    if (!ok) return 1;
    std::printf("timing: %s\n", eager ? "eager (calls queued one by one, host launch costs included)"
                                       : "graphs (calls replayed from CUDA graphs: GPU time only)");
    std::printf("%-8s %-11s %-5s %-11s %-4s %-7s %-9s %-11s %-8s %s\n", "model", "op", "heads", "N x K", "n",
                "form", "us", "weight GB/s", "of copy", "speed-up");
    const int64_t last_n = *std::max_element(rows.begin(), rows.end());
    struct Total {
      std::string model;
      double small = 0, cublas = 0;  // microseconds at last_n
    };
    std::vector<Total> totals;
    for (const Shape& s : shapes) {
      const int copies = static_cast<int>(std::max(1.0, std::ceil(kCopiesBytes / s.weight_bytes())));
      const HostWeight hw = host_weight(s, copies, block);
      const std::vector<float> x = random_rows(s, last_n, rng);
      Form small = make_form(true, s, hw, x, last_n), cublas = make_form(false, s, hw, x, last_n);
      if (totals.empty() || totals.back().model != s.model) totals.push_back(Total{s.model});
      const std::string shape = std::to_string(s.N) + "x" + std::to_string(s.K);
      for (int64_t n : rows) {
        const double us_small = time_us(small, s, n, reps, eager), us_cublas = time_us(cublas, s, n, reps, eager);
        if (n == last_n) totals.back().small += us_small, totals.back().cublas += us_cublas;
        for (const bool is_small : {true, false}) {
          const double us = is_small ? us_small : us_cublas;
          const double gbs = s.weight_bytes() / (us * 1e-6) / 1e9;
          const char* form = is_small ? "small" : "cublas";
          char speedup[32] = "-", speedup_json[32] = "null";
          if (is_small) {
            std::snprintf(speedup, sizeof speedup, "%.2fx", us_cublas / us_small);
            std::snprintf(speedup_json, sizeof speedup_json, "%.3f", us_cublas / us_small);
          }
          std::printf("%-8s %-11s %-5lld %-11s %-4lld %-7s %-9.2f %-11.0f %-7.1f%% %s\n", s.model, s.op,
                      static_cast<long long>(s.heads), shape.c_str(), static_cast<long long>(n), form, us,
                      gbs, 100.0 * gbs / bw, speedup);
          if (json)
            std::printf(
                "{\"bench\":\"dense_linear\",\"timing\":\"%s\",\"form\":\"%s\",\"gpu\":\"%s\",\"model\":\"%s\",\"op\":\"%s\","
                "\"heads\":%lld,\"N\":%lld,\"K\":%lld,\"n\":%lld,\"copies\":%d,\"us\":%.3f,"
                "\"weight_gbs\":%.1f,\"copy_gbs\":%.1f,\"speedup\":%s}\n",
                eager ? "eager" : "graphs", form, prop.name, s.model, s.op, static_cast<long long>(s.heads), static_cast<long long>(s.N),
                static_cast<long long>(s.K), static_cast<long long>(n), copies, us, gbs, bw, speedup_json);
        }
      }
    }
    for (const Total& t : totals)
      std::printf("%s, n=%lld, the ops above once each: small %.1f us, cublas %.1f us (small %.2fx)\n",
                  t.model.c_str(), static_cast<long long>(last_n), t.small, t.cublas, t.cublas / t.small);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dense_linear_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
