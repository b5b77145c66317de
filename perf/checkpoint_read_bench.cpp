// How fast a checkpoint's bytes come off the disk through the loader's access pattern, against a
// plain sequential read of the same shard files (what `dd` does): the reader half of the GPU
// performance issue's start-up target (the reader at >= 80% of the disk's sequential rate).
// The loader maps every shard and touches each weight tensor once when it prepares the weights
// (on a GPU: a copy to the device per tensor). This bench opens the checkpoint the same way
// (Checkpoint + ModelWeights, which also reads kv_b_proj for W_UK) and copies every weight view
// into a host buffer, in the model's order or in file order (what Model::prepare_weights does).
//   checkpoint_read_bench --model DIR [--order model|file|both] [--no-sequential]
// Each pass starts cold: the shards' pages are dropped from the page cache first
// (posix_fadvise DONTNEED; clean pages only, so run it after the files have been synced).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/checkpoint.h"
#include "model/weights.h"

namespace {

using Clock = std::chrono::steady_clock;
using dpa::backend::WeightView;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every weight view with data, in the model's order (ModelWeights::views).
std::vector<WeightView> model_order(dpa::model::ModelWeights& w) {
  std::vector<WeightView> v;
  for (const WeightView* x : w.views())
    if (x->data && x->rows && x->cols) v.push_back(*x);
  return v;
}

// Copies each view's rows into `buf` (as the driver stages a pageable host-to-device copy).
double touch(const std::vector<WeightView>& views, std::vector<char>& buf) {
  double bytes = 0;
  for (const WeightView& w : views) {
    const std::size_t es = dpa::dtype_size(w.dtype), row = static_cast<std::size_t>(w.cols) * es;
    const auto* src = static_cast<const char*>(w.data);
    std::size_t at = 0;
    for (int64_t r = 0; r < w.rows; ++r) {
      if (at + row > buf.size()) at = 0;
      std::memcpy(buf.data() + at, src + static_cast<std::size_t>(r * w.ld) * es, row);
      at += row;
    }
    bytes += static_cast<double>(row) * static_cast<double>(w.rows);
  }
  return bytes;
}

// Drops the files' cached pages, so that the next pass reads from the disk.
void drop_cache(const std::set<std::string>& files) {
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// read(2) of each file front to back in 16 MiB pieces, as `dd bs=16M`.
double read_files(const std::set<std::string>& files, std::vector<char>& buf) {
  double bytes = 0;
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      std::fprintf(stderr, "checkpoint_read_bench: cannot open %s\n", f.c_str());
      continue;
    }
    for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) > 0;) bytes += static_cast<double>(n);
    ::close(fd);
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, order = "both";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) dir = argv[++i];
    else if (a == "--order" && i + 1 < argc) order = argv[++i];
    else {
      std::fprintf(stderr, "usage: checkpoint_read_bench --model DIR [--order model|file|both]\n");
      return 2;
    }
  }
  if (dir.empty() || (order != "model" && order != "file" && order != "both")) {
    std::fprintf(stderr, "usage: checkpoint_read_bench --model DIR [--order model|file|both]\n");
    return 2;
  }
  std::vector<char> buf(std::size_t{16} << 20);
  auto ckpt = dpa::model::Checkpoint::open(dir);
  std::set<std::string> files;
  for (const std::string& n : ckpt->names()) files.insert(ckpt->info(n).file);

  drop_cache(files);
  auto t0 = Clock::now();
  const double seq_bytes = read_files(files, buf);
  const double seq_s = seconds_since(t0);
  std::printf("sequential read (dd bs=16M), %zu files: %.2f GB in %.1f s = %.2f GB/s\n", files.size(),
              seq_bytes / 1e9, seq_s, seq_bytes / seq_s / 1e9);

  for (const std::string& o : {std::string("model"), std::string("file")}) {
    if (order != "both" && order != o) continue;
    drop_cache(files);
    auto c = dpa::model::Checkpoint::open(dir);  // fresh mappings
    t0 = Clock::now();
    dpa::model::ModelWeights w(*c, dpa::model::ShardSpec{});
    std::vector<WeightView> views = model_order(w);
    if (o == "file")  // as Model::prepare_weights takes them
      std::stable_sort(views.begin(), views.end(), [](const WeightView& a, const WeightView& b) {
        return std::less<const void*>()(a.data, b.data);
      });
    const double bytes = touch(views, buf);
    const double s = seconds_since(t0);
    std::printf("loader pattern, %s order: %zu views, %.2f GB in %.1f s = %.2f GB/s (%.0f%% of sequential)\n",
                o.c_str(), views.size(), bytes / 1e9, s, bytes / s / 1e9, 100.0 * (bytes / s) / (seq_bytes / seq_s));
    std::printf("{\"bench\":\"checkpoint_read\",\"order\":\"%s\",\"gb\":%.3f,\"s\":%.2f,\"gbs\":%.3f,\"seq_gbs\":%.3f}\n",
                o.c_str(), bytes / 1e9, s, bytes / s / 1e9, seq_bytes / seq_s / 1e9);
  }
  return 0;
}
