#include "model/staged_communicator.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"

namespace dpa::model {
namespace {

class StagedCommunicator final : public dist::Communicator {
 public:
  StagedCommunicator(std::unique_ptr<dist::Communicator> host, backend::Backend& be)
      : host_(std::move(host)), be_(be) {
    if (host_->memory_space() != dist::MemorySpace::host)
      throw Error("staged communicator: the inner communicator must work on host memory");
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  dist::MemorySpace memory_space() const override { return dist::MemorySpace::device; }
  std::string name() const override { return host_->name() + "-staged"; }

  void all_reduce(const void* send, void* recv, std::size_t count, DType type, dist::ReduceOp op) override {
    const std::size_t bytes = count * dtype_size(type);
    down(a_, send, bytes);
    host_->all_reduce(a_.data(), a_.data(), count, type, op);
    up(recv, a_, bytes);
  }
  void all_gather(const void* send, void* recv, std::size_t count, DType type) override {
    const std::size_t bytes = count * dtype_size(type);
    down(a_, send, bytes);
    b_.resize(bytes * static_cast<std::size_t>(size()));
    host_->all_gather(a_.data(), b_.data(), count, type);
    up(recv, b_, b_.size());
  }
  void all_gather_v(const void* send, std::size_t send_count, void* recv, const std::size_t* counts,
                    const std::size_t* displs, DType type) override {
    const std::size_t es = dtype_size(type);
    down(a_, send, send_count * es);
    const std::size_t end = extent(counts, displs) * es;
    down(b_, recv, end);  // what lies between the blocks is kept
    host_->all_gather_v(a_.data(), send_count, b_.data(), counts, displs, type);
    up(recv, b_, end);
  }
  void reduce_scatter(const void* send, void* recv, std::size_t count, DType type, dist::ReduceOp op) override {
    const std::size_t bytes = count * dtype_size(type);
    down(a_, send, bytes * static_cast<std::size_t>(size()));
    b_.resize(bytes);
    host_->reduce_scatter(a_.data(), b_.data(), count, type, op);
    up(recv, b_, bytes);
  }
  void all_to_all_v(const void* send, const std::size_t* send_counts, const std::size_t* send_displs, void* recv,
                    const std::size_t* recv_counts, const std::size_t* recv_displs, DType type) override {
    const std::size_t es = dtype_size(type);
    down(a_, send, extent(send_counts, send_displs) * es);
    const std::size_t end = extent(recv_counts, recv_displs) * es;
    down(b_, recv, end);
    host_->all_to_all_v(a_.data(), send_counts, send_displs, b_.data(), recv_counts, recv_displs, type);
    up(recv, b_, end);
  }
  void broadcast(void* buf, std::size_t count, DType type, int root) override {
    const std::size_t bytes = count * dtype_size(type);
    down(a_, buf, bytes);
    host_->broadcast(a_.data(), count, type, root);
    up(buf, a_, bytes);
  }
  void barrier() override {
    be_.synchronize();
    host_->barrier();
  }
  void synchronize() override { be_.synchronize(); }

 private:
  std::size_t extent(const std::size_t* counts, const std::size_t* displs) const {
    std::size_t end = 0;
    for (int r = 0; r < size(); ++r)
      if (counts[r]) end = std::max(end, displs[r] + counts[r]);
    return end;
  }
  // download() waits for the work queued before it, so the collective sees what it wrote.
  void down(std::vector<uint8_t>& h, const void* src, std::size_t bytes) {
    h.resize(std::max<std::size_t>(bytes, 1));
    if (bytes) be_.download(h.data(), src, bytes);
  }
  void up(void* dst, const std::vector<uint8_t>& h, std::size_t bytes) {
    if (bytes) be_.upload(dst, h.data(), bytes);  // upload takes the bytes at the call
  }
  std::unique_ptr<dist::Communicator> host_;
  backend::Backend& be_;
  std::vector<uint8_t> a_, b_;
};

}  // namespace

std::unique_ptr<dist::Communicator> make_staged_communicator(std::unique_ptr<dist::Communicator> host,
                                                             backend::Backend& be) {
  return std::make_unique<StagedCommunicator>(std::move(host), be);
}

}  // namespace dpa::model
