// NCCL implementation of the Communicator. all_gather_v and all_to_all_v are grouped
// point-to-point calls; zero-byte pairs are skipped on both sides, which NCCL allows inside a
// group because the pairing stays symmetric.
#include "dist/nccl_communicator.h"

#include <vector>

#include "core/cuda_check.h"
#include "dist/runtime.h"

namespace dpa::dist {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f16: return ncclFloat16;
    case DType::bf16: return ncclBfloat16;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8:
    case DType::f8_e4m3: return ncclUint8;
    case DType::i8: return ncclInt8;
  }
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(MPI_Comm comm, cudaStream_t stream) : stream_(stream) {
    DPA_CHECK_MPI(MPI_Comm_rank(comm, &rank_));
    DPA_CHECK_MPI(MPI_Comm_size(comm, &size_));
    ncclUniqueId id;
    if (rank_ == 0) DPA_CHECK_NCCL(ncclGetUniqueId(&id));
    DPA_CHECK_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
    DPA_CHECK_NCCL(ncclCommInitRank(&comm_, size_, id, rank_));
    if (stream_ == nullptr) {
      DPA_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      own_stream_ = true;
    }
    DPA_CHECK_CUDA(cudaMalloc(&barrier_buf_, sizeof(float)));
  }

  ~NcclCommunicator() override {
    cudaStreamSynchronize(stream_);
    cudaFree(barrier_buf_);
    ncclCommDestroy(comm_);
    if (own_stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory_space() const override { return MemorySpace::device; }
  std::string name() const override { return "nccl"; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) override {
    DPA_CHECK_NCCL(ncclAllReduce(send, recv, count, nccl_type(t), nccl_op(op), comm_, stream_));
  }

  void all_gather(const void* send, void* recv, std::size_t count, DType t) override {
    DPA_CHECK_NCCL(ncclAllGather(send, recv, count, nccl_type(t), comm_, stream_));
  }

  void all_gather_v(const void* send, std::size_t send_count, void* recv, const std::size_t* counts,
                    const std::size_t* displs, DType t) override {
    const std::size_t esz = dtype_size(t);
    DPA_CHECK_NCCL(ncclGroupStart());
    for (int p = 0; p < size_; ++p) {
      if (send_count) DPA_CHECK_NCCL(ncclSend(send, send_count, nccl_type(t), p, comm_, stream_));
      if (counts[p])
        DPA_CHECK_NCCL(ncclRecv(static_cast<char*>(recv) + displs[p] * esz, counts[p], nccl_type(t), p,
                                comm_, stream_));
    }
    DPA_CHECK_NCCL(ncclGroupEnd());
  }

  void reduce_scatter(const void* send, void* recv, std::size_t count, DType t, ReduceOp op) override {
    DPA_CHECK_NCCL(ncclReduceScatter(send, recv, count, nccl_type(t), nccl_op(op), comm_, stream_));
  }

  void all_to_all_v(const void* send, const std::size_t* send_counts, const std::size_t* send_displs,
                    void* recv, const std::size_t* recv_counts, const std::size_t* recv_displs,
                    DType t) override {
    const std::size_t esz = dtype_size(t);
    DPA_CHECK_NCCL(ncclGroupStart());
    for (int p = 0; p < size_; ++p) {
      if (send_counts[p])
        DPA_CHECK_NCCL(ncclSend(static_cast<const char*>(send) + send_displs[p] * esz, send_counts[p],
                                nccl_type(t), p, comm_, stream_));
      if (recv_counts[p])
        DPA_CHECK_NCCL(ncclRecv(static_cast<char*>(recv) + recv_displs[p] * esz, recv_counts[p],
                                nccl_type(t), p, comm_, stream_));
    }
    DPA_CHECK_NCCL(ncclGroupEnd());
  }

  void broadcast(void* buf, std::size_t count, DType t, int root) override {
    DPA_CHECK_NCCL(ncclBroadcast(buf, buf, count, nccl_type(t), root, comm_, stream_));
  }

  void barrier() override {
    DPA_CHECK_NCCL(ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclFloat32, ncclSum, comm_, stream_));
    synchronize();
  }

  void synchronize() override { DPA_CHECK_CUDA(cudaStreamSynchronize(stream_)); }
  void group_start() override { DPA_CHECK_NCCL(ncclGroupStart()); }
  void group_end() override { DPA_CHECK_NCCL(ncclGroupEnd()); }

 private:
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  int rank_ = 0, size_ = 1;
  float* barrier_buf_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, void* stream) {
  return std::make_unique<NcclCommunicator>(comm, static_cast<cudaStream_t>(stream));
}

void* communicator_stream(Communicator& c) {
  if (auto* n = dynamic_cast<NcclCommunicator*>(&c)) return n->stream();
  return nullptr;
}

}  // namespace dpa::dist
