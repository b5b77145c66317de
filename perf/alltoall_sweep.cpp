// All-to-all size sweep through the project's Communicator (nccl-tests style): for each message
// size, check the exchange exactly first (#wrong, summed over ranks), then time it (CUDA events
// for NCCL, wall clock for MPI; warm-up, median of --iters). Prints a table for people and one
// JSON line per size for tools. algbw = bytes sent per rank / time; busbw = algbw * (n-1)/n.
//
//   mpirun -np 2 perf/alltoall_sweep --comm nccl --min-bytes 1K --max-bytes 256M
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "dist/mpi_communicator.h"
#include "dist/runtime.h"
#ifdef DPA_HAVE_NCCL
#include "core/cuda_check.h"
#include "dist/nccl_communicator.h"
#endif

namespace {

using dpa::DType;

std::size_t parse_size(const char* s) {
  char* end = nullptr;
  double v = std::strtod(s, &end);
  switch (end && *end ? *end : ' ') {
    case 'K': case 'k': v *= 1024; break;
    case 'M': case 'm': v *= 1024.0 * 1024; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; break;
    default: break;
  }
  return static_cast<std::size_t>(v);
}

struct Options {
  std::string comm = "mpi";
  std::size_t min_bytes = 1024, max_bytes = 64u << 20;
  int iters = 50, warmup = 10;
};

// Moves `bytes` bytes per rank in equal parts to every peer; int32 elements encode (src, dst, i).
struct Sweep {
  dpa::dist::Communicator& comm;
  bool device;
  int n, me;

  void* alloc(std::size_t b) {
#ifdef DPA_HAVE_NCCL
    if (device) { void* p; DPA_CHECK_CUDA(cudaMalloc(&p, b)); return p; }
#endif
    return std::malloc(b);
  }
  void release(void* p) {
#ifdef DPA_HAVE_NCCL
    if (device) { cudaFree(p); return; }
#endif
    std::free(p);
  }
  void copy(void* d, const void* s, std::size_t b, bool to_space) {
#ifdef DPA_HAVE_NCCL
    if (device) { DPA_CHECK_CUDA(cudaMemcpy(d, s, b, to_space ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost)); return; }
#endif
    (void)to_space;
    std::memcpy(d, s, b);
  }

  double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // Returns {median seconds, wrong elements over all ranks}.
  std::pair<double, long long> run(std::size_t bytes, const Options& o) {
    const std::size_t per_peer = std::max<std::size_t>(bytes / sizeof(int32_t) / n, 1);
    const std::size_t total = per_peer * n;
    std::vector<std::size_t> counts(n, per_peer), displs(n);
    std::exclusive_scan(counts.begin(), counts.end(), displs.begin(), std::size_t{0});
    std::vector<int32_t> host(total);
    for (int p = 0; p < n; ++p)
      for (std::size_t i = 0; i < per_peer; ++i) host[p * per_peer + i] = static_cast<int32_t>((me * 131 + p * 7) ^ static_cast<int>(i));
    void* s = alloc(total * 4);
    void* r = alloc(total * 4);
    copy(s, host.data(), total * 4, true);
    std::vector<int32_t> poison(total, -7);
    copy(r, poison.data(), total * 4, true);
    comm.all_to_all_v(s, counts.data(), displs.data(), r, counts.data(), displs.data(), DType::i32);
    comm.synchronize();
    copy(host.data(), r, total * 4, false);
    long long wrong = 0;
    for (int p = 0; p < n; ++p)
      for (std::size_t i = 0; i < per_peer; ++i) wrong += host[p * per_peer + i] != static_cast<int32_t>((p * 131 + me * 7) ^ static_cast<int>(i));
    long long all_wrong = 0;
    MPI_Allreduce(&wrong, &all_wrong, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);

    for (int i = 0; i < o.warmup; ++i)
      comm.all_to_all_v(s, counts.data(), displs.data(), r, counts.data(), displs.data(), DType::i32);
    comm.synchronize();
    std::vector<double> times;
    for (int i = 0; i < o.iters; ++i) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t = 0;
#ifdef DPA_HAVE_NCCL
      if (device) {
        cudaStream_t st = static_cast<cudaStream_t>(dpa::dist::communicator_stream(comm));
        cudaEvent_t a, b;
        cudaEventCreate(&a);
        cudaEventCreate(&b);
        cudaEventRecord(a, st);
        comm.all_to_all_v(s, counts.data(), displs.data(), r, counts.data(), displs.data(), DType::i32);
        cudaEventRecord(b, st);
        cudaEventSynchronize(b);
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        t = ms * 1e-3;
        cudaEventDestroy(a);
        cudaEventDestroy(b);
      } else
#endif
      {
        const double t0 = now();
        comm.all_to_all_v(s, counts.data(), displs.data(), r, counts.data(), displs.data(), DType::i32);
        t = now() - t0;
      }
      // The slowest rank defines the collective's time.
      double tmax = 0;
      MPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      times.push_back(tmax);
    }
    release(s);
    release(r);
    std::sort(times.begin(), times.end());
    return {times[times.size() / 2], all_wrong};
  }
};

}  // namespace

int main(int argc, char** argv) {
  dpa::dist::Runtime rt(&argc, &argv);
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--comm") o.comm = argv[i + 1];
    else if (k == "--min-bytes") o.min_bytes = parse_size(argv[i + 1]);
    else if (k == "--max-bytes") o.max_bytes = parse_size(argv[i + 1]);
    else if (k == "--iters") o.iters = std::atoi(argv[i + 1]);
    else if (k == "--warmup") o.warmup = std::atoi(argv[i + 1]);
    else {
      if (rt.rank() == 0) std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  std::unique_ptr<dpa::dist::Communicator> comm;
  bool device = false;
  if (o.comm == "nccl") {
#ifdef DPA_HAVE_NCCL
    DPA_CHECK_CUDA(cudaSetDevice(rt.local_rank()));
    comm = dpa::dist::make_nccl_communicator(MPI_COMM_WORLD);
    device = true;
#else
    if (rt.rank() == 0) std::fprintf(stderr, "built without NCCL\n");
    return 2;
#endif
  } else {
    comm = dpa::dist::make_mpi_communicator(MPI_COMM_WORLD);
  }
  Sweep sw{*comm, device, rt.size(), rt.rank()};
  if (rt.rank() == 0)
    std::printf("# alltoall sweep: comm=%s ranks=%d iters=%d warmup=%d (bytes = sent per rank)\n"
                "%12s %12s %12s %12s %8s\n", o.comm.c_str(), rt.size(), o.iters, o.warmup,
                "bytes", "time_us", "algbw_GB/s", "busbw_GB/s", "#wrong");
  std::vector<std::string> json;
  long long total_wrong = 0;
  for (std::size_t b = o.min_bytes; b <= o.max_bytes; b *= 2) {
    auto [t, wrong] = sw.run(b, o);
    total_wrong += wrong;
    const double algbw = static_cast<double>(b) / t / 1e9;
    const double busbw = algbw * (rt.size() - 1) / rt.size();
    if (rt.rank() == 0) {
      std::printf("%12zu %12.2f %12.2f %12.2f %8lld\n", b, t * 1e6, algbw, busbw, wrong);
      char line[256];
      std::snprintf(line, sizeof line,
                    "{\"bench\":\"alltoall\",\"comm\":\"%s\",\"ranks\":%d,\"bytes\":%zu,\"time_us\":%.3f,"
                    "\"algbw_gbps\":%.3f,\"busbw_gbps\":%.3f,\"wrong\":%lld}",
                    o.comm.c_str(), rt.size(), b, t * 1e6, algbw, busbw, wrong);
      json.push_back(line);
    }
  }
  if (rt.rank() == 0) {
    for (auto& j : json) std::printf("%s\n", j.c_str());
    std::fflush(stdout);
  }
  comm.reset();
  return total_wrong ? 1 : 0;
}
