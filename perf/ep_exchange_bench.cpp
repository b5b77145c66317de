// EP dispatch and combine (issue 6, target 3): model/ep_exchange.h's two forms moving the routed
// rows of `tokens` tokens per rank (hidden floats each, top-k distinct experts of `experts`)
// between every rank of the job, as Model::moe does.
//  - exact: this rank's counts to the host (moe_counts), the counts exchanged and read back, then
//    the routed rows only;
//  - padded: fixed-size blocks per peer, counts exchanged on the device, over the communicator;
//  - peer: the same blocks stored straight into the owners' memory (CUDA IPC, one node), a flag
//    per source, no collective call.
// On GPUs the padded forms' dispatch and combine are each recorded as a CUDA graph and replayed
// (a form that does not record fails the check).
// The rows go out and the results come back in bf16 (--rows bf16 --results bf16, as Model::moe
// moves them for bf16 experts) or f32.
// Each form is checked first: identity experts (the results are the rows received, stored in the
// results' type; with bf16 rows or results the tokens are bf16 values, so nothing is lost), so the
// combine must give sum_k w[t, k] x[t] for every token of every rank. Then timed: dispatch =
// from the sorted slots to the rows in the local experts' order; combine = the results back and
// weighted into the tokens. Per iteration: a barrier, CUDA events on the backend's stream (wall
// clock on the CPU), the slowest rank's time; the median over --iters. Prints a table and one
// JSON line per (tokens, form), with the bytes that cross to other ranks each way (wire_MB: the
// rows routed there, or the padded form's whole blocks over the communicator) and their rate.
//
//   mpirun -np 2 perf/ep_exchange_bench --device cuda --tokens 128,256
//   mpirun -np 2 perf/ep_exchange_bench --device cuda --comm mpi --same-gpu 1 --forms peer
//     (two processes on one GPU: the peer form's correctness where only one GPU is at hand)
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "bench_util.h"
#include "dist/mpi_communicator.h"
#include "dist/runtime.h"
#include "model/ep_exchange.h"
#ifdef DPA_HAVE_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "dist/nccl_communicator.h"
#endif

namespace {

using dpa::DType;
using dpa::backend::Backend;
using dpa::backend::Buffer;

enum class Form { exact, padded, peer };
const char* form_name(Form f) { return f == Form::exact ? "exact" : f == Form::padded ? "padded" : "peer"; }

struct Options {
  std::string device = "cpu", comm;  // comm: nccl on GPUs, mpi on the CPU unless told
  std::vector<Form> forms = {Form::exact, Form::padded, Form::peer};
  bool same_gpu = false;
  std::vector<int64_t> tokens = {128, 256};
  int64_t hidden = 2048, experts = 64, top_k = 6;
  DType results = DType::bf16, rows = DType::bf16;
  int iters = 50, warmup = 10;
};

// Times one piece of work on every rank; returns the slowest rank's seconds.
class Timer {
 public:
  explicit Timer(Backend& be) : be_(be) {
#ifdef DPA_HAVE_CUDA
    if (be_.stream()) {
      DPA_CHECK_CUDA(cudaEventCreate(&a_));
      DPA_CHECK_CUDA(cudaEventCreate(&b_));
    }
#endif
  }
  ~Timer() {
#ifdef DPA_HAVE_CUDA
    if (a_) cudaEventDestroy(a_), cudaEventDestroy(b_);
#endif
  }
  template <class F>
  double time(F&& work) {
    be_.synchronize();
    MPI_Barrier(MPI_COMM_WORLD);
    double t = 0;
#ifdef DPA_HAVE_CUDA
    if (a_) {
      auto* st = static_cast<cudaStream_t>(be_.stream());
      DPA_CHECK_CUDA(cudaEventRecord(a_, st));
      work();
      DPA_CHECK_CUDA(cudaEventRecord(b_, st));
      DPA_CHECK_CUDA(cudaEventSynchronize(b_));
      float ms = 0;
      DPA_CHECK_CUDA(cudaEventElapsedTime(&ms, a_, b_));
      t = ms * 1e-3;
    } else
#endif
    {
      const auto t0 = std::chrono::steady_clock::now();
      work();
      be_.synchronize();
      t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    double slowest = 0;
    MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return slowest;
  }

 private:
  Backend& be_;
#ifdef DPA_HAVE_CUDA
  cudaEvent_t a_ = nullptr, b_ = nullptr;
#endif
};

struct Result {
  double dispatch_s = 0, combine_s = 0, max_rel_err = 0;
  bool recorded = false;  // max_rel_err < 0: the form is not available here
  // Bytes this rank's rows and results cross to other ranks per direction (the most of any rank):
  // the rows routed there (exact, peer), or whole blocks (padded over the communicator).
  double wire_dispatch = 0, wire_combine = 0;
};

// One form at one token count on this rank.
Result run(Backend& be, dpa::dist::Communicator& comm, const Options& o, int64_t T, Form form, int rank) {
  const bool padded = form != Form::exact;
  const int64_t E = o.experts, K = o.top_k, D = o.hidden, n_slots = T * K;
  std::mt19937 rng(static_cast<unsigned>(1234 + 7919 * rank + T));
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> all(static_cast<std::size_t>(E));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    ids.insert(ids.end(), all.begin(), all.begin() + K);
  }
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(static_cast<std::size_t>(T * D)), w(static_cast<std::size_t>(n_slots));
  const bool bf16_values = o.results == DType::bf16 || o.rows == DType::bf16;
  for (float& v : x) v = bf16_values ? dpa::bf16_to_f32(dpa::f32_to_bf16(u(rng))) : u(rng);
  for (float& v : w) v = u(rng);
  Buffer<int32_t> d_ids(be, ids.size() + 1), order(be, ids.size() + 1), position(be, ids.size() + 1);
  Buffer<float> d_x(be, x.size() + 1), d_w(be, w.size() + 1), out(be, x.size() + 1);
  Buffer<int64_t> d_counts(be, static_cast<std::size_t>(E));
  be.upload(d_ids.data(), ids.data(), ids.size() * sizeof(int32_t));
  be.upload(d_x.data(), x.data(), x.size() * sizeof(float));
  be.upload(d_w.data(), w.data(), w.size() * sizeof(float));

  uint64_t epoch = 0;
  dpa::model::EpExchange ex(be, comm, E, D, epoch, o.results, o.rows);
  Result r;
  {
    const int64_t R = comm.size(), per = E / R, cap_rows = (T + 15) / 16 * 16 * std::min(K, per);
    int64_t routed_away = 0;  // slots whose expert another rank owns
    for (int32_t e : ids) routed_away += e / per != comm.rank();
    const int64_t rows_away = form == Form::padded ? (R - 1) * cap_rows : routed_away;
    double mine[2] = {static_cast<double>(rows_away * D * static_cast<int64_t>(dpa::dtype_size(o.rows))),
                      static_cast<double>(rows_away * D * static_cast<int64_t>(dpa::dtype_size(o.results)))};
    double most[2] = {0, 0};
    MPI_Allreduce(mine, most, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    r.wire_dispatch = most[0], r.wire_combine = most[1];
  }
  if (form == Form::peer) {
    const bool on = ex.enable_peer_memory((T + 15) / 16 * 16, K, true, [&](const std::vector<uint8_t>& mine) {
      std::vector<uint8_t> all(mine.size() * static_cast<std::size_t>(comm.size()));
      MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, all.data(), static_cast<int>(mine.size()),
                    MPI_BYTE, MPI_COMM_WORLD);
      return all;
    });
    if (!on) return Result{0, 0, -1, false, 0, 0};
  }
  std::vector<int64_t> counts(static_cast<std::size_t>(E));
  dpa::model::EpExchange::Local in;
  dpa::model::EpExchange::Back back;
  // The work of each timed piece (the sort before it is not timed: both forms need it).
  auto sort = [&] {
    be.moe_sort(d_ids.data(), n_slots, E, order.data(), padded ? nullptr : position.data());
    if (padded) be.moe_counts_to(d_counts.data());
  };
  auto dispatch = [&] {
    if (padded) {
      in = ex.dispatch_padded(d_x.data(), order.data(), K, n_slots, d_counts.data(), (T + 15) / 16 * 16, K);
    } else {
      ex.stage(d_x.data(), order.data(), K, n_slots);
      be.moe_counts(counts.data());
      in = ex.dispatch(counts.data());
    }
  };
  // Not timed: rows of one type into results of the other go through the host.
  std::vector<float> rows_f32;
  std::vector<uint16_t> rows_bf16;
  auto identity_experts = [&] {
    if (in.n_rows <= 0) return;
    const std::size_t n = static_cast<std::size_t>(in.n_rows * D);
    if (in.dtype == ex.results_dtype()) return be.copy(ex.results(), in.rows, n * dpa::dtype_size(in.dtype));
    rows_f32.resize(n), rows_bf16.resize(n);
    if (in.dtype == DType::f32) {
      be.download(rows_f32.data(), in.rows, n * sizeof(float));
      std::transform(rows_f32.begin(), rows_f32.end(), rows_bf16.begin(), dpa::f32_to_bf16);
      be.upload(ex.results(), rows_bf16.data(), n * sizeof(uint16_t));
    } else {
      be.download(rows_bf16.data(), in.rows, n * sizeof(uint16_t));
      std::transform(rows_bf16.begin(), rows_bf16.end(), rows_f32.begin(), dpa::bf16_to_f32);
      be.upload(ex.results(), rows_f32.data(), n * sizeof(float));
    }
  };
  auto combine = [&] {
    back = ex.combine(position.data());
    be.fill_zero(out.data(), x.size() * sizeof(float));
    be.moe_combine(back.y, back.rows, d_w.data(), T, K, D, out.data(), true, back.dtype);
  };

  // Once eagerly (buffers sized), then the padded form recorded where the backend records.
  sort(), dispatch(), identity_experts(), combine();
  be.synchronize();
  void* g_dispatch = nullptr;
  void* g_combine = nullptr;
  if (padded && be.capture_begin()) {
    dispatch();
    g_dispatch = be.capture_end();
    if (be.capture_begin()) {
      combine();
      g_combine = be.capture_end();
    }
    r.recorded = g_dispatch && g_combine;
  }
  auto run_dispatch = [&] { g_dispatch ? be.replay(g_dispatch) : dispatch(); };
  auto run_combine = [&] { g_combine ? be.replay(g_combine) : combine(); };

  // The check, through what is timed.
  sort(), run_dispatch(), identity_experts(), run_combine();
  std::vector<float> got(x.size());
  be.download(got.data(), out.data(), got.size() * sizeof(float));
  double scale = 0, err = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < D; ++c) {
      double want = 0;
      for (int64_t k = 0; k < K; ++k) want += static_cast<double>(w[t * K + k]) * x[t * D + c];
      scale = std::max(scale, std::fabs(want));
      const double e = std::fabs(got[t * D + c] - want);
      err = std::isnan(e) ? INFINITY : std::max(err, e);
    }
  double mine = scale > 0 ? err / scale : err;
  MPI_Allreduce(&mine, &r.max_rel_err, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

  Timer timer(be);
  std::vector<double> td, tc;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    sort();
    const double a = timer.time(run_dispatch);
    identity_experts();
    const double b = timer.time(run_combine);
    if (i >= o.warmup) td.push_back(a), tc.push_back(b);
  }
  r.dispatch_s = dpa::perf::median(td), r.combine_s = dpa::perf::median(tc);
  be.synchronize();
  if (g_dispatch) be.drop_graph(g_dispatch);
  if (g_combine) be.drop_graph(g_combine);
  return r;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  for (std::size_t p = 0; p < s.size();) {
    const std::size_t q = std::min(s.find(',', p), s.size());
    if (q > p) v.push_back(std::stoll(s.substr(p, q - p)));
    p = q + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  dpa::dist::Runtime rt(&argc, &argv);
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--device") o.device = v;
    else if (k == "--tokens") o.tokens = parse_list(v);
    else if (k == "--comm") o.comm = v;
    else if (k == "--same-gpu") o.same_gpu = v == "1" || v == "true";
    else if (k == "--forms") {
      o.forms.clear();
      for (std::size_t p = 0; p <= v.size();) {
        const std::size_t q = std::min(v.find(',', p), v.size());
        const std::string f = v.substr(p, q - p);
        if (f == "exact") o.forms.push_back(Form::exact);
        else if (f == "padded") o.forms.push_back(Form::padded);
        else if (f == "peer") o.forms.push_back(Form::peer);
        else if (!f.empty()) {
          if (rt.rank() == 0) std::fprintf(stderr, "unknown form %s (exact, padded, peer)\n", f.c_str());
          return 2;
        }
        p = q + 1;
      }
    }
    else if (k == "--hidden") o.hidden = std::stoll(v);
    else if (k == "--experts") o.experts = std::stoll(v);
    else if (k == "--top-k") o.top_k = std::stoll(v);
    else if (k == "--results" && (v == "bf16" || v == "f32")) o.results = v == "bf16" ? DType::bf16 : DType::f32;
    else if (k == "--rows" && (v == "bf16" || v == "f32")) o.rows = v == "bf16" ? DType::bf16 : DType::f32;
    else if (k == "--iters") o.iters = std::stoi(v);
    else if (k == "--warmup") o.warmup = std::stoi(v);
    else {
      if (rt.rank() == 0) std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.experts % rt.size() != 0 || o.top_k < 1 || o.top_k > o.experts || o.iters < 1) {
    if (rt.rank() == 0) std::fprintf(stderr, "need experts %% ranks == 0, 1 <= top-k <= experts, iters >= 1\n");
    return 2;
  }
  std::unique_ptr<Backend> be;
  std::unique_ptr<dpa::dist::Communicator> comm;
  if (o.device == "cuda") {
#ifdef DPA_HAVE_CUDA
    be = dpa::backend::make_cuda_backend(o.same_gpu ? 0 : rt.local_rank());
    if (o.comm.empty() || o.comm == "nccl") comm = dpa::dist::make_nccl_communicator(MPI_COMM_WORLD, be->stream());
    else comm = dpa::dist::make_mpi_communicator(MPI_COMM_WORLD);
#else
    if (rt.rank() == 0) std::fprintf(stderr, "built without CUDA\n");
    return 2;
#endif
  } else {
    be = dpa::backend::make_cpu_backend();
    comm = dpa::dist::make_mpi_communicator(MPI_COMM_WORLD);
  }
  if (rt.rank() == 0)
    std::printf("# ep exchange: device=%s comm=%s ranks=%d hidden=%lld experts=%lld top_k=%lld rows %s, results %s,"
                " iters=%d\n"
                "%8s %8s %12s %12s %14s %10s %11s %11s %9s %10s\n", o.device.c_str(), comm->name().c_str(), rt.size(), static_cast<long long>(o.hidden),
                static_cast<long long>(o.experts), static_cast<long long>(o.top_k),
                std::string(dpa::dtype_name(o.rows)).c_str(),
                std::string(dpa::dtype_name(o.results)).c_str(), o.iters, "tokens", "form",
                "dispatch_us", "combine_us", "routed_MB/rank", "wire_MB", "disp_GB/s", "comb_GB/s", "graphed", "max_rel");
  std::vector<std::string> json;
  bool ok = true;
  // Rows in backend memory must be where the communicator moves them: on GPUs over MPI only the
  // peer form (which calls no collective) applies.
  const bool comm_fits = (comm->memory_space() == dpa::dist::MemorySpace::device) == (o.device == "cuda");
  for (int64_t T : o.tokens)
    for (Form form : o.forms) {
      if (!comm_fits && form != Form::peer) continue;
      const bool padded = form != Form::exact;
      const Result r = run(*be, *comm, o, T, form, rt.rank());
      if (r.max_rel_err < 0) {
        if (rt.rank() == 0) std::printf("%8lld %8s   (no peer memory here: one node, a GPU backend)\n",
                                        static_cast<long long>(T), form_name(form));
        continue;
      }
      const bool good = r.max_rel_err <= 1e-5 && (!padded || o.device != "cuda" || r.recorded);
      ok = ok && good;
      // The routed rows' bytes a rank sends (its own share included), as dispatched.
      const double mb = static_cast<double>(T * o.top_k * o.hidden * dpa::dtype_size(o.rows)) / 1e6;
      if (rt.rank() == 0) {
        // Rate over the link: what crossed to other ranks over the time (0 on one rank).
        auto rate = [](double bytes, double s) { return s > 0 ? bytes / s / 1e9 : 0.0; };
        std::printf("%8lld %8s %12.1f %12.1f %14.2f %10.2f %11.1f %11.1f %9s %10.1e%s\n", static_cast<long long>(T),
                    form_name(form), r.dispatch_s * 1e6, r.combine_s * 1e6, mb, r.wire_dispatch / 1e6,
                    rate(r.wire_dispatch, r.dispatch_s), rate(r.wire_combine, r.combine_s),
                    r.recorded ? "yes" : "no", r.max_rel_err, good ? "" : "  FAIL");
        char line[480];
        std::snprintf(line, sizeof line,
                      "{\"bench\":\"ep_exchange\",\"device\":\"%s\",\"ranks\":%d,\"tokens\":%lld,\"hidden\":%lld,"
                      "\"experts\":%lld,\"top_k\":%lld,\"form\":\"%s\",\"dispatch_us\":%.2f,\"combine_us\":%.2f,"
                      "\"rows\":\"%s\",\"results\":\"%s\",\"wire_dispatch_bytes\":%.0f,\"wire_combine_bytes\":%.0f,"
                      "\"graphed\":%s,\"max_rel_err\":%.3g}",
                      o.device.c_str(), rt.size(), static_cast<long long>(T), static_cast<long long>(o.hidden),
                      static_cast<long long>(o.experts), static_cast<long long>(o.top_k), form_name(form),
                      r.dispatch_s * 1e6, r.combine_s * 1e6, std::string(dpa::dtype_name(o.rows)).c_str(),
                      std::string(dpa::dtype_name(o.results)).c_str(), r.wire_dispatch, r.wire_combine,
                      r.recorded ? "true" : "false", r.max_rel_err);
        json.push_back(line);
      }
    }
  if (rt.rank() == 0) {
    for (const std::string& j : json) std::printf("%s\n", j.c_str());
    std::fflush(stdout);
  }
  comm.reset();
  return ok ? 0 : 1;
}
