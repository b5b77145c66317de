// MPI implementation of the Communicator: host buffers, blocking collectives. bf16 and fp16
// reductions use user-defined MPI operations that accumulate each pair in fp32.
#include "dist/mpi_communicator.h"

#include <climits>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "dist/runtime.h"

namespace dpa::dist {
namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::f16:
    case DType::bf16: return MPI_UINT16_T;
    case DType::u8:
    case DType::f8_e4m3: return MPI_UINT8_T;
    case DType::i8: return MPI_INT8_T;
  }
  return MPI_DATATYPE_NULL;
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), int Kind>
void half_op(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    float x = ToF(a[i]), y = ToF(b[i]);
    float r = Kind == 0 ? x + y : Kind == 1 ? (x > y ? x : y) : (x < y ? x : y);
    b[i] = FromF(r);
  }
}

MPI_Op half_mpi_op(DType t, ReduceOp op) {
  // [dtype f16/bf16][op sum/max/min], created on first use after MPI_Init.
  static MPI_Op ops[2][3] = {{MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL},
                             {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL}};
  static MPI_User_function* fns[2][3] = {
      {half_op<f16_to_f32, f32_to_f16, 0>, half_op<f16_to_f32, f32_to_f16, 1>,
       half_op<f16_to_f32, f32_to_f16, 2>},
      {half_op<bf16_to_f32, f32_to_bf16, 0>, half_op<bf16_to_f32, f32_to_bf16, 1>,
       half_op<bf16_to_f32, f32_to_bf16, 2>}};
  const int ti = t == DType::bf16 ? 1 : 0, oi = static_cast<int>(op);
  if (ops[ti][oi] == MPI_OP_NULL) DPA_CHECK_MPI(MPI_Op_create(fns[ti][oi], 1, &ops[ti][oi]));
  return ops[ti][oi];
}

MPI_Op mpi_op(DType t, ReduceOp op) {
  if (t == DType::f16 || t == DType::bf16) return half_mpi_op(t, op);
  if (t == DType::u8 || t == DType::i8 || t == DType::f8_e4m3)
    fail_one("MPI", "reduce", __FILE__, __LINE__, "reductions on 8-bit types are not supported");
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

int as_int(std::size_t n) {
  if (n > static_cast<std::size_t>(INT_MAX))
    fail_one("MPI", "count", __FILE__, __LINE__,
             fmt::format("{} elements exceed MPI's int count; split the message", n));
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    DPA_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
    DPA_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory_space() const override { return MemorySpace::host; }
  std::string name() const override { return "mpi"; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) override {
    const void* s = send == recv ? MPI_IN_PLACE : send;
    DPA_CHECK_MPI(MPI_Allreduce(s, recv, as_int(count), mpi_type(t), mpi_op(t, op), comm_));
  }

  void all_gather(const void* send, void* recv, std::size_t count, DType t) override {
    DPA_CHECK_MPI(MPI_Allgather(send, as_int(count), mpi_type(t), recv, as_int(count), mpi_type(t), comm_));
  }

  void all_gather_v(const void* send, std::size_t send_count, void* recv, const std::size_t* counts,
                    const std::size_t* displs, DType t) override {
    std::vector<int> c(size_), d(size_);
    for (int r = 0; r < size_; ++r) c[r] = as_int(counts[r]), d[r] = as_int(displs[r]);
    DPA_CHECK_MPI(MPI_Allgatherv(send, as_int(send_count), mpi_type(t), recv, c.data(), d.data(),
                                 mpi_type(t), comm_));
  }

  void reduce_scatter(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) override {
    DPA_CHECK_MPI(MPI_Reduce_scatter_block(send, recv, as_int(count), mpi_type(t), mpi_op(t, op), comm_));
  }

  void all_to_all_v(const void* send, const std::size_t* send_counts, const std::size_t* send_displs,
                    void* recv, const std::size_t* recv_counts, const std::size_t* recv_displs,
                    DType t) override {
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    for (int r = 0; r < size_; ++r) {
      sc[r] = as_int(send_counts[r]);
      sd[r] = as_int(send_displs[r]);
      rc[r] = as_int(recv_counts[r]);
      rd[r] = as_int(recv_displs[r]);
    }
    DPA_CHECK_MPI(MPI_Alltoallv(send, sc.data(), sd.data(), mpi_type(t), recv, rc.data(), rd.data(),
                                mpi_type(t), comm_));
  }

  void broadcast(void* buf, std::size_t count, DType t, int root) override {
    DPA_CHECK_MPI(MPI_Bcast(buf, as_int(count), mpi_type(t), root, comm_));
  }

  void barrier() override { DPA_CHECK_MPI(MPI_Barrier(comm_)); }
  void synchronize() override {}

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace dpa::dist
