// Communicator tests shared by the MPI (host) and NCCL (device) implementations. Every payload
// is exactly predictable: all-to-all rows encode (source rank, destination rank, row index), so
// a receiver knows what each element must be, and the number of wrong elements is summed across
// ranks (nccl-tests style). Counts are uneven and include zero-length peers.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include "core/dtype.h"
#include "dist/communicator.h"

namespace dpa::test {

// Allocation and copies in the communicator's memory space.
struct Memory {
  std::function<void*(std::size_t)> alloc;
  std::function<void(void*)> release;
  std::function<void(void* dst, const void* src, std::size_t)> upload;    // host -> space
  std::function<void(void* dst, const void* src, std::size_t)> download;  // space -> host
};

// A buffer in the communicator's space, filled from / read back to host vectors.
template <typename T>
class Buffer {
 public:
  Buffer(const Memory& m, std::size_t n) : m_(m), n_(n), p_(m.alloc(std::max<std::size_t>(n, 1) * sizeof(T))) {}
  ~Buffer() { m_.release(p_); }
  void set(const std::vector<T>& v) { m_.upload(p_, v.data(), v.size() * sizeof(T)); }
  std::vector<T> get() const {
    std::vector<T> v(n_);
    m_.download(v.data(), p_, n_ * sizeof(T));
    return v;
  }
  T* data() { return static_cast<T*>(p_); }

 private:
  const Memory& m_;
  std::size_t n_;
  void* p_;
};

// The fixture: a communicator over MPI_COMM_WORLD of the implementation under test.
struct CommEnv {
  std::unique_ptr<dist::Communicator> comm;
  Memory mem;
};
CommEnv& env();  // provided by the test's main file

// Sums `wrong` over every rank; each rank asserts the global count is zero.
inline int global_wrong(int wrong) {
  int total = 0;
  MPI_Allreduce(&wrong, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  return total;
}

// Rows sent from `src` to `dst`: uneven, zero for some pairs (and for every pair when salt = 0
// and the world is 1... the self pair keeps a few rows).
inline std::size_t rows_between(int src, int dst, int salt) {
  return static_cast<std::size_t>((src * 7 + dst * 3 + salt) % 5);
}

inline void run_all_to_all_v(int salt, std::size_t row_width) {
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  std::vector<std::size_t> sc(n), sd(n), rc(n), rd(n);
  for (int p = 0; p < n; ++p) {
    sc[p] = rows_between(me, p, salt) * row_width;
    rc[p] = rows_between(p, me, salt) * row_width;
  }
  std::exclusive_scan(sc.begin(), sc.end(), sd.begin(), std::size_t{0});
  std::exclusive_scan(rc.begin(), rc.end(), rd.begin(), std::size_t{0});
  const std::size_t n_send = sd.back() + sc.back(), n_recv = rd.back() + rc.back();
  std::vector<int32_t> send(n_send);
  for (int p = 0; p < n; ++p)
    for (std::size_t i = 0; i < sc[p]; ++i) {
      const std::size_t row = i / row_width, col = i % row_width;
      send[sd[p] + i] = col == 0 ? me : col == 1 ? p : static_cast<int32_t>(row * 1000 + col);
    }
  Buffer<int32_t> sb(env().mem, n_send), rb(env().mem, n_recv);
  sb.set(send);
  rb.set(std::vector<int32_t>(n_recv, -7));  // poison: unwritten elements show up as wrong
  c.all_to_all_v(sb.data(), sc.data(), sd.data(), rb.data(), rc.data(), rd.data(), DType::i32);
  c.synchronize();
  auto recv = rb.get();
  int wrong = 0;
  for (int p = 0; p < n; ++p)
    for (std::size_t i = 0; i < rc[p]; ++i) {
      const std::size_t row = i / row_width, col = i % row_width;
      const int32_t want = col == 0 ? p : col == 1 ? me : static_cast<int32_t>(row * 1000 + col);
      wrong += recv[rd[p] + i] != want;
    }
  EXPECT_EQ(global_wrong(wrong), 0) << "salt " << salt << " width " << row_width;
}

}  // namespace dpa::test

namespace {
using dpa::DType;
using dpa::test::Buffer;
using dpa::test::env;
using dpa::test::global_wrong;

TEST(Communicator, AllToAllVUnevenWithZeroPeers) {
  for (int salt = 0; salt < 5; ++salt)
    for (std::size_t width : {3, 8, 257}) dpa::test::run_all_to_all_v(salt, width);
}

// Two exchanges issued as one group (NCCL: one launch): per-peer counts and uneven rows.
TEST(Communicator, GroupedAllToAllV) {
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  std::vector<std::size_t> one(n, 1), displ(n), sc(n), sd(n), rc(n), rd(n);
  std::iota(displ.begin(), displ.end(), std::size_t{0});
  std::vector<int64_t> counts(n);
  for (int p = 0; p < n; ++p) {
    counts[p] = me * 100 + p;
    sc[p] = dpa::test::rows_between(me, p, 3), rc[p] = dpa::test::rows_between(p, me, 3);
  }
  std::exclusive_scan(sc.begin(), sc.end(), sd.begin(), std::size_t{0});
  std::exclusive_scan(rc.begin(), rc.end(), rd.begin(), std::size_t{0});
  std::vector<float> rows(sd.back() + sc.back());
  for (int p = 0; p < n; ++p)
    for (std::size_t i = 0; i < sc[p]; ++i) rows[sd[p] + i] = static_cast<float>(me * 1000 + p * 10 + static_cast<int>(i));
  const std::size_t n_recv = rd.back() + rc.back();
  Buffer<int64_t> cs(env().mem, n), cr(env().mem, n);
  Buffer<float> rs(env().mem, std::max<std::size_t>(rows.size(), 1)), rr(env().mem, std::max<std::size_t>(n_recv, 1));
  cs.set(counts);
  cr.set(std::vector<int64_t>(n, -7));
  if (!rows.empty()) rs.set(rows);
  rr.set(std::vector<float>(std::max<std::size_t>(n_recv, 1), -7));
  c.group_start();
  c.all_to_all_v(cs.data(), one.data(), displ.data(), cr.data(), one.data(), displ.data(), DType::i64);
  c.all_to_all_v(rs.data(), sc.data(), sd.data(), rr.data(), rc.data(), rd.data(), DType::f32);
  c.group_end();
  c.synchronize();
  const auto got_counts = cr.get();
  const auto got_rows = rr.get();
  int wrong = 0;
  for (int p = 0; p < n; ++p) {
    wrong += got_counts[p] != p * 100 + me;
    for (std::size_t i = 0; i < rc[p]; ++i)
      wrong += got_rows[rd[p] + i] != static_cast<float>(p * 1000 + me * 10 + static_cast<int>(i));
  }
  EXPECT_EQ(global_wrong(wrong), 0);
}

TEST(Communicator, AllToAllVAllZero) {
  auto& c = *env().comm;
  const int n = c.size();
  std::vector<std::size_t> zeros(n, 0);
  Buffer<int32_t> sb(env().mem, 1), rb(env().mem, 1);
  rb.set({-7});
  c.all_to_all_v(sb.data(), zeros.data(), zeros.data(), rb.data(), zeros.data(), zeros.data(), DType::i32);
  c.synchronize();
  EXPECT_EQ(global_wrong(rb.get()[0] != -7), 0);
}

TEST(Communicator, AllReduceSumMaxF32AndBf16) {
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  const std::size_t count = 1000;
  std::vector<float> x(count);
  for (std::size_t i = 0; i < count; ++i) x[i] = static_cast<float>(me + 1) * static_cast<float>(i % 17);
  Buffer<float> b(env().mem, count);
  b.set(x);
  c.all_reduce(b.data(), b.data(), count, DType::f32, dpa::dist::ReduceOp::sum);
  c.synchronize();
  auto sum = b.get();
  int wrong = 0;
  const float ranks_sum = static_cast<float>(n * (n + 1) / 2);
  for (std::size_t i = 0; i < count; ++i) wrong += sum[i] != ranks_sum * static_cast<float>(i % 17);
  b.set(x);
  c.all_reduce(b.data(), b.data(), count, DType::f32, dpa::dist::ReduceOp::max);
  c.synchronize();
  auto mx = b.get();
  for (std::size_t i = 0; i < count; ++i) wrong += mx[i] != static_cast<float>(n) * static_cast<float>(i % 17);
  // bf16: small integers are exact in bf16, so the sum is exact too.
  std::vector<uint16_t> h(count);
  for (std::size_t i = 0; i < count; ++i) h[i] = dpa::f32_to_bf16(static_cast<float>(i % 5));
  Buffer<uint16_t> hb(env().mem, count);
  hb.set(h);
  c.all_reduce(hb.data(), hb.data(), count, DType::bf16, dpa::dist::ReduceOp::sum);
  c.synchronize();
  auto hs = hb.get();
  for (std::size_t i = 0; i < count; ++i) wrong += dpa::bf16_to_f32(hs[i]) != static_cast<float>(n * (i % 5));
  EXPECT_EQ(global_wrong(wrong), 0);
}

TEST(Communicator, AllGatherAndAllGatherVUneven) {
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  const std::size_t count = 33;
  std::vector<int32_t> mine(count);
  for (std::size_t i = 0; i < count; ++i) mine[i] = me * 100000 + static_cast<int32_t>(i);
  Buffer<int32_t> sb(env().mem, count), rb(env().mem, count * n);
  sb.set(mine);
  c.all_gather(sb.data(), rb.data(), count, DType::i32);
  c.synchronize();
  auto all = rb.get();
  int wrong = 0;
  for (int r = 0; r < n; ++r)
    for (std::size_t i = 0; i < count; ++i) wrong += all[r * count + i] != r * 100000 + static_cast<int32_t>(i);
  // Uneven, with rank 1 (if present) sending nothing.
  std::vector<std::size_t> counts(n), displs(n);
  for (int r = 0; r < n; ++r) counts[r] = r == 1 ? 0 : static_cast<std::size_t>(r * 3 + 2);
  std::exclusive_scan(counts.begin(), counts.end(), displs.begin(), std::size_t{0});
  const std::size_t total = displs.back() + counts.back();
  std::vector<int32_t> part(counts[me]);
  for (std::size_t i = 0; i < part.size(); ++i) part[i] = me * 1000 + static_cast<int32_t>(i);
  Buffer<int32_t> pb(env().mem, part.size()), gb(env().mem, total);
  pb.set(part);
  gb.set(std::vector<int32_t>(total, -7));
  c.all_gather_v(pb.data(), counts[me], gb.data(), counts.data(), displs.data(), DType::i32);
  c.synchronize();
  auto g = gb.get();
  for (int r = 0; r < n; ++r)
    for (std::size_t i = 0; i < counts[r]; ++i) wrong += g[displs[r] + i] != r * 1000 + static_cast<int32_t>(i);
  EXPECT_EQ(global_wrong(wrong), 0);
}

TEST(Communicator, ReduceScatterBroadcastBarrier) {
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  const std::size_t count = 17;
  std::vector<float> x(count * n);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) + static_cast<float>(me);
  Buffer<float> sb(env().mem, x.size()), rb(env().mem, count);
  sb.set(x);
  c.reduce_scatter(sb.data(), rb.data(), count, DType::f32, dpa::dist::ReduceOp::sum);
  c.synchronize();
  auto got = rb.get();
  int wrong = 0;
  const float ranks_sum = static_cast<float>(n * (n - 1) / 2);
  for (std::size_t i = 0; i < count; ++i)
    wrong += got[i] != static_cast<float>(n) * static_cast<float>(me * count + i) + ranks_sum;
  for (int root = 0; root < n; ++root) {
    std::vector<int64_t> v(9, me == root ? 4242 + root : -1);
    Buffer<int64_t> bb(env().mem, v.size());
    bb.set(v);
    c.broadcast(bb.data(), v.size(), DType::i64, root);
    c.synchronize();
    for (int64_t e : bb.get()) wrong += e != 4242 + root;
  }
  c.barrier();
  EXPECT_EQ(global_wrong(wrong), 0);
  EXPECT_EQ(c.size(), [] { int s; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }());
}

}  // namespace
