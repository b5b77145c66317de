// The CUDA backend (see cuda_backend.h): construction, memory and weights, phase marks, the
// workspaces and checks the ops share. The ops are in dense_ops.cpp, attention_ops.cpp and
// moe_ops.cpp.
#include "backend/cuda/cuda_backend.h"
#include <cuda_profiler_api.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"
#include "core/log.h"

namespace dpa::backend {

namespace {

// The choice that environment variable `name` makes among `choices` (unset or empty: none);
// any other value is an error that names the choices. The backend's switches for tests and
// measurements.
template <class T>
std::optional<T> env_choice(const char* name, std::initializer_list<std::pair<std::string_view, T>> choices) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  std::string expected;
  std::size_t i = 0;
  for (const auto& [key, choice] : choices) {
    if (key == value) return choice;
    expected += fmt::format("{}{}", i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ", key);
    ++i;
  }
  throw Error(fmt::format("{}={}: expected {}", name, value, expected));
}

}  // namespace

CudaBackend::CudaBackend(int device) : device_(device) {
  // Attention form: "kernel" (one fused kernel, split over keys when the context is long),
  // "gemm" (scores and P·V by cuBLAS around a masked softmax), default: gemm from
  // kGemmMinCtx visible keys on.
  if (auto v = env_choice<AttnMode>("DPA_CUDA_ATTN",
                                    {{"auto", attn_mode_}, {"kernel", AttnMode::kernel}, {"gemm", AttnMode::gemm}}))
    attn_mode_ = *v;
  // mla_decode kernel version: "v2" (default) or "v1" (the first one; for comparisons).
  if (auto v = env_choice<int>("DPA_CUDA_MLA_DECODE", {{"v1", 1}, {"v2", 2}})) mla_decode_variant_ = *v;
  // The bf16 mla_decode kernel's tile ring: 2 slots (default, two blocks per SM) or 3 (one), and
  // how its tiles come in: "bulk" (default: TMA bulk copies) or "cp.async".
  if (auto v = env_choice<int>("DPA_CUDA_MLA_DECODE_STAGES", {{"2", 2}, {"3", 3}})) mla_bf16_stages_ = *v;
  if (auto v = env_choice<bool>("DPA_CUDA_MLA_DECODE_LOAD", {{"bulk", true}, {"cp.async", false}}))
    mla_bf16_bulk_ = *v;
  // The bf16 mla_decode kernel for many heads: "auto" (default: the warpgroup-MMA kernel from
  // kWgmmaMinHeads heads on, where latent 512 + rope 64 on sm_90), "wgmma" (wherever it
  // applies), "mma" (never: the mma.sync kernel).
  if (auto v = env_choice<MlaWgmma>("DPA_CUDA_MLA_DECODE_MMA",
                                    {{"auto", mla_wgmma_}, {"wgmma", MlaWgmma::always}, {"mma", MlaWgmma::never}}))
    mla_wgmma_ = *v;
  // Its form: "seesaw" (default: the warpgroups take turns at the tiles, a producer warpgroup
  // copies them; pages of 16, 32 or 64 rows) or "cp.async" (both warpgroups on every tile, every
  // thread copies; the first form). See kernels/mla_decode.cuh.
  if (auto v = env_choice<kernels::MlaWgmmaForm>(
          "DPA_CUDA_MLA_WGMMA_FORM", {{"seesaw", kernels::MlaWgmmaForm::seesaw}, {"cp.async", kernels::MlaWgmmaForm::cp_async}}))
    mla_wgmma_form_ = *v;
  // Linear layers of up to 64 rows with bf16 weights: "1" (default) the small-batch kernel
  // (kernels/linear_small) where it is measured faster (kSmallLinearMaxWeightBytes), "force" it
  // wherever it applies, "0" never: cuBLAS after a bf16 copy of the input.
  if (auto v = env_choice<SmallLinearUse>(
          "DPA_CUDA_SMALL_LINEAR",
          {{"0", SmallLinearUse::never}, {"1", SmallLinearUse::preferred}, {"force", SmallLinearUse::always}}))
    small_linear_ = *v;
  // The routed experts of moe_experts on the warpgroup-MMA kernels: "auto" (default: where
  // active experts hold kWgmmaExpertMinRows rows on average), "1" wherever they apply, "0" never.
  if (auto v = env_choice<ExpertWgmma>(
          "DPA_MOE_WGMMA", {{"auto", expert_wgmma_}, {"1", ExpertWgmma::always}, {"0", ExpertWgmma::never}}))
    expert_wgmma_ = *v;
  // Their blocks: "auto" (default: 128 weight rows where the launch streams weights, else 256),
  // "wide" (256) or "narrow" (128) everywhere.
  if (auto v = env_choice<ExpertBlocks>("DPA_MOE_WGMMA_BLOCKS", {{"auto", expert_blocks_},
                                                                 {"wide", ExpertBlocks::wide},
                                                                 {"narrow", ExpertBlocks::narrow}}))
    expert_blocks_ = *v;
  // Which of MLA's GEMM inputs their producers write rounded to bf16: "all" (default: W_UK's by
  // mla_prepare_uk's prepare kernel, o_proj's by mla_decode_uv's value projection), "uk", "o" or
  // "none" (a conversion pass before each GEMM, as linear_batched and linear do it).
  if (auto v = env_choice<std::pair<bool, bool>>("DPA_CUDA_MLA_ROUNDED", {{"all", {true, true}},
                                                                          {"uk", {true, false}},
                                                                          {"o", {false, true}},
                                                                          {"none", {false, false}}}))
    std::tie(uk_rounded_, o_rounded_) = *v;
  DPA_CHECK_CUDA(cudaSetDevice(device_));
  for (cudaStream_t& l : lanes_) DPA_CHECK_CUDA(cudaStreamCreateWithFlags(&l, cudaStreamNonBlocking));
  stream_ = lanes_[0];
  lane_events_.resize(kLaneEvents);
  for (cudaEvent_t& e : lane_events_) DPA_CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  download_events_.resize(kDownloadEvents);
  for (cudaEvent_t& e : download_events_) DPA_CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  DPA_CHECK_CUBLAS(cublasCreate(&cublas_));
  DPA_CHECK_CUBLAS(cublasSetStream(cublas_, stream_));
  // A workspace of our own (cuBLAS's default size on Hopper), set after the stream: cuBLAS then
  // never allocates one while a graph is being recorded (decode graphs).
  DPA_CHECK_CUDA(cudaMalloc(&cublas_ws_, kCublasWorkspaceBytes));
  DPA_CHECK_CUBLAS(cublasSetWorkspace(cublas_, cublas_ws_, kCublasWorkspaceBytes));
  // No TF32 and no reduced-precision reductions: the parity bounds assume IEEE fp32 sums.
  DPA_CHECK_CUBLAS(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
}

double CudaBackend::copy_bandwidth_gbs() {
  if (copy_gbs_ >= 0) return copy_gbs_;
  copy_gbs_ = 0;
  std::size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  const std::size_t bytes = std::min<std::size_t>(std::size_t{1} << 30, free_bytes / 4) / 4096 * 4096;
  if (bytes < (std::size_t{64} << 20)) return 0;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
    if (a) cudaFree(a);
    cudaGetLastError();
    return 0;
  }
  cudaEvent_t e0, e1;
  DPA_CHECK_CUDA(cudaEventCreate(&e0));
  DPA_CHECK_CUDA(cudaEventCreate(&e1));
  DPA_CHECK_CUDA(cudaMemsetAsync(a, 1, bytes, stream_));
  std::vector<float> ms;
  for (int r = 0; r < 8; ++r) {
    DPA_CHECK_CUDA(cudaEventRecord(e0, stream_));
    DPA_CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream_));
    DPA_CHECK_CUDA(cudaEventRecord(e1, stream_));
    DPA_CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    DPA_CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (r > 0) ms.push_back(t);  // the first copy warms up
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  cudaFree(a), cudaFree(b);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  copy_gbs_ = med > 0 ? 2.0 * static_cast<double>(bytes) / (med * 1e-3) / 1e9 : 0;
  return copy_gbs_;
}

void CudaBackend::profiler_window(bool open) {
  // The window's device time as well (two events on the queue), so that a run without the
  // profiler gives the step's wall time to set against the profiler's sum of kernels.
  for (cudaEvent_t& e : window_events_)
    if (!e) DPA_CHECK_CUDA(cudaEventCreate(&e));
  if (open) {
    DPA_CHECK_CUDA(cudaEventRecord(window_events_[0], stream_));
    DPA_CHECK_CUDA(cudaProfilerStart());
    return;
  }
  DPA_CHECK_CUDA(cudaProfilerStop());
  DPA_CHECK_CUDA(cudaEventRecord(window_events_[1], stream_));
  DPA_CHECK_CUDA(cudaEventSynchronize(window_events_[1]));
  float ms = 0.0f;
  DPA_CHECK_CUDA(cudaEventElapsedTime(&ms, window_events_[0], window_events_[1]));
  log::info("profiler window: {:.3f} ms on the device queue", ms);
}

void CudaBackend::phase_mark(const char* name) {
  if (n_marks_ == mark_events_.size()) {
    cudaEvent_t e;
    DPA_CHECK_CUDA(cudaEventCreate(&e));
    mark_events_.push_back(e);
  }
  DPA_CHECK_CUDA(cudaEventRecord(mark_events_[n_marks_], stream_));
  mark_names_.resize(n_marks_ + 1);
  mark_names_[n_marks_++] = name;
}

void CudaBackend::phase_collect(std::map<std::string, double>& into) {
  if (n_marks_ == 0) return;
  phase_mark("");  // the end of the last phase
  DPA_CHECK_CUDA(cudaEventSynchronize(mark_events_[n_marks_ - 1]));
  for (std::size_t i = 0; i + 1 < n_marks_; ++i) {
    float ms = 0;
    DPA_CHECK_CUDA(cudaEventElapsedTime(&ms, mark_events_[i], mark_events_[i + 1]));
    into[mark_names_[i]] += ms * 1e-3;
  }
  n_marks_ = 0;
}

void CudaBackend::set_lane(int lane) {
  if (lane != 0 && lane != 1) throw Error(fmt::format("cuda backend: lane {} (there are 2)", lane));
  if (stream_ == lanes_[lane]) return;
  stream_ = lanes_[lane];
  DPA_CHECK_CUBLAS(cublasSetStream(cublas_, stream_));
}

uint64_t CudaBackend::lane_signal() {
  const uint64_t mark = lane_marks_++;
  DPA_CHECK_CUDA(cudaEventRecord(lane_events_[mark % kLaneEvents], stream_));
  return mark;
}

void CudaBackend::lane_wait(uint64_t mark) {
  if (mark >= lane_marks_ || mark + kLaneEvents < lane_marks_)
    throw Error(fmt::format("cuda backend: lane mark {} not among the last {} of {}", mark, kLaneEvents, lane_marks_));
  DPA_CHECK_CUDA(cudaStreamWaitEvent(stream_, lane_events_[mark % kLaneEvents], 0));
}

CudaBackend::~CudaBackend() {
  for (cudaEvent_t e : mark_events_) cudaEventDestroy(e);
  for (cudaEvent_t e : lane_events_) cudaEventDestroy(e);
  for (cudaEvent_t e : download_events_) cudaEventDestroy(e);
  for (cudaEvent_t e : window_events_)
    if (e) cudaEventDestroy(e);
  cudaStreamSynchronize(lanes_[1]);
  cudaStreamSynchronize(lanes_[0]);
  for (auto& [key, p] : weights_) cudaFree(p);
  for (const Bf16Workspace& w : bf16_ws_)
    if (w.p) cudaFree(w.p);
  if (staging_host_.base) cudaFreeHost(staging_host_.base);
  for (cudaEvent_t e : staging_host_.done)
    if (e) cudaEventDestroy(e);
  if (counts_dev_) cudaFree(counts_dev_);
  if (counts_pinned_) cudaFreeHost(counts_pinned_);
  if (counts_ready_) cudaEventDestroy(counts_ready_);
  if (attn_ws_) cudaFree(attn_ws_);
  if (moe_ws_) cudaFree(moe_ws_);
  for (auto& [key, p] : fixed_ptrs_) cudaFree(p);
  for (auto& [key, p] : expert_ptrs_) cudaFree(p.dev);
  for (auto& [key, p] : expert_maps_)
    if (p) cudaFree(p);
  cublasDestroy(cublas_);
  if (cublas_ws_) cudaFree(cublas_ws_);
  for (cudaStream_t l : lanes_) cudaStreamDestroy(l);
}

void* CudaBackend::alloc(std::size_t bytes) {
  not_capturing("alloc");
  void* p = nullptr;
  const cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 1);
  if (rc != cudaSuccess || !p) {
    cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail_one("CUDA", "cudaMalloc", __FILE__, __LINE__,
             fmt::format("out of device memory allocating {} bytes on GPU {} ({} of {} MiB free): {}",
                         bytes, device_, free_b >> 20, total_b >> 20, cudaGetErrorString(rc)));
  }
  return p;
}

void CudaBackend::release(void* p) {
  if (!p) return;
  not_capturing("release");
  DPA_CHECK_CUDA(cudaFree(p));
}

// CUDA IPC: the handle of an allocation's base (every alloc() is one), mapped in another process
// of the node (peer access to another GPU is enabled by the mapping, over NVLink where linked).
std::vector<uint8_t> CudaBackend::export_memory(void* p) {
  not_capturing("export_memory");
  cudaIpcMemHandle_t h;
  if (const cudaError_t rc = cudaIpcGetMemHandle(&h, p); rc != cudaSuccess) {
    cudaGetLastError();
    throw Error(fmt::format("export_memory: {}", cudaGetErrorString(rc)));
  }
  const auto* b = reinterpret_cast<const uint8_t*>(&h);
  return std::vector<uint8_t>(b, b + sizeof h);
}

void* CudaBackend::import_memory(const std::vector<uint8_t>& handle) {
  not_capturing("import_memory");
  cudaIpcMemHandle_t h;
  if (handle.size() != sizeof h)
    throw Error(fmt::format("import_memory: a handle of {} bytes, expected {}", handle.size(), sizeof h));
  std::memcpy(&h, handle.data(), sizeof h);
  void* p = nullptr;
  if (const cudaError_t rc = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess); rc != cudaSuccess) {
    cudaGetLastError();  // not sticky: the caller falls back
    throw Error(fmt::format("import_memory: {}", cudaGetErrorString(rc)));
  }
  return p;
}

void CudaBackend::release_imported(void* p) {
  if (p) DPA_CHECK_CUDA(cudaIpcCloseMemHandle(p));
}

void CudaBackend::staging_leave_half() {
  Staging& s = staging_host_;
  for (int lane = 0; lane < 2; ++lane)
    if (s.lanes & (1u << lane)) DPA_CHECK_CUDA(cudaEventRecord(s.done[2 * s.half + lane], lanes_[lane]));
  s.half ^= 1, s.used = 0, s.lanes = 0;
}

void CudaBackend::upload(void* dst, const void* host_src, std::size_t bytes) {
  if (!bytes) return;
  not_capturing("upload");  // host memory read when the copy runs: not recordable
  if (bytes > kStageMaxHalfBytes) {  // pageable: the driver stages it, and may wait for the device
    DPA_CHECK_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    return;
  }
  // A step's inputs (a few to some hundred KB in several arrays): copied into page-locked staging,
  // so that each asynchronous copy is queued at once instead of through the driver's bounce
  // buffer, which may wait for the device to reach the copy. Two halves in turn; a half is
  // written again only once the copies from it are done.
  Staging& s = staging_host_;
  if (!s.base || bytes > s.half_bytes) {
    // First use, or an upload past a half: both halves' copies waited for (once per growth), then
    // halves of the next power of two.
    if (s.base) {
      staging_leave_half();
      for (cudaEvent_t e : s.done) DPA_CHECK_CUDA(cudaEventSynchronize(e));
      DPA_CHECK_CUDA(cudaFreeHost(s.base));
      s.base = nullptr;
    } else {
      for (cudaEvent_t& e : s.done) DPA_CHECK_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    std::size_t half = kStageHalfBytes;
    while (half < bytes) half *= 2;
    DPA_CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&s.base), 2 * half, cudaHostAllocDefault));
    s.half_bytes = half, s.half = 0, s.used = 0, s.lanes = 0;
  }
  if (s.used + bytes > s.half_bytes) {  // the other half, after its last copies
    staging_leave_half();
    for (int lane = 0; lane < 2; ++lane) DPA_CHECK_CUDA(cudaEventSynchronize(s.done[2 * s.half + lane]));
  }
  char* p = s.base + s.half * s.half_bytes + s.used;
  std::memcpy(p, host_src, bytes);
  s.used += (bytes + 15) / 16 * 16;
  s.lanes |= stream_ == lanes_[1] ? 2u : 1u;
  DPA_CHECK_CUDA(cudaMemcpyAsync(dst, p, bytes, cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::upload_pinned(void* dst, const void* host_src, std::size_t bytes) {
  if (!bytes) return;
  not_capturing("upload_pinned");
  DPA_CHECK_CUDA(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::download(void* host_dst, const void* src, std::size_t bytes) {
  if (!bytes) return;
  not_capturing("download");
  DPA_CHECK_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  DPA_CHECK_CUDA(cudaStreamSynchronize(stream_));
}

void* CudaBackend::host_alloc(std::size_t bytes) {
  void* p = nullptr;
  DPA_CHECK_CUDA(cudaHostAlloc(&p, std::max<std::size_t>(bytes, 1), cudaHostAllocDefault));
  return p;
}

void CudaBackend::host_release(void* p) {
  if (p) DPA_CHECK_CUDA(cudaFreeHost(p));
}

uint64_t CudaBackend::download_async(void* host_dst, const void* src, std::size_t bytes) {
  not_capturing("download_async");
  if (bytes) DPA_CHECK_CUDA(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  const uint64_t ticket = downloads_++;
  DPA_CHECK_CUDA(cudaEventRecord(download_events_[ticket % kDownloadEvents], stream_));
  return ticket;
}

void CudaBackend::download_wait(uint64_t ticket) {
  if (ticket >= downloads_ || ticket + kDownloadEvents < downloads_)
    throw Error(fmt::format("cuda backend: download ticket {} not among the last {} of {}", ticket, kDownloadEvents,
                            downloads_));
  DPA_CHECK_CUDA(cudaEventSynchronize(download_events_[ticket % kDownloadEvents]));
}

void CudaBackend::copy(void* dst, const void* src, std::size_t bytes) {
  if (!bytes || dst == src) return;
  DPA_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::fill_zero(void* p, std::size_t bytes) {
  if (!bytes) return;
  DPA_CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, stream_));
}

WeightView CudaBackend::prepare_weight(const WeightView& w) {
  if (!supports_weight(w.dtype))
    throw Error(fmt::format("cuda backend: weight dtype {} not supported", dtype_name(w.dtype)));
  if (w.rows == 0 || w.cols == 0) return WeightView{nullptr, w.dtype, w.rows, w.cols, w.cols};
  if (is_device(w.data)) return w;  // already ours (a prepared view, or a slice of one)
  const auto key = std::make_tuple(w.data, w.dtype, w.rows, w.cols, w.ld);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = weights_.find(key); it != weights_.end())
    return WeightView::dense(it->second, w.dtype, w.rows, w.cols);
  const std::size_t es = dtype_size(w.dtype);
  void* d = alloc(static_cast<std::size_t>(w.rows * w.cols) * es);
  DPA_CHECK_CUDA(cudaMemcpy2DAsync(d, w.cols * es, w.data, w.ld * es, w.cols * es, w.rows,
                                   cudaMemcpyHostToDevice, stream_));
  DPA_CHECK_CUDA(cudaStreamSynchronize(stream_));
  weights_.emplace(key, d);
  prepared_.emplace(reinterpret_cast<std::uintptr_t>(d), static_cast<std::size_t>(w.rows * w.cols) * es);
  return WeightView::dense(d, w.dtype, w.rows, w.cols);
}

bool CudaBackend::supports_weight(DType dtype) const {
  return dtype == DType::f32 || dtype == DType::bf16;
}

bool CudaBackend::is_device(const void* p) {
  if (!p) return false;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

bool CudaBackend::on_device(const void* p) const {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = prepared_.upper_bound(a);
    if (it != prepared_.begin() && a < std::prev(it)->first + std::prev(it)->second) return true;
  }
  return is_device(p);
}

void CudaBackend::check_weight(const WeightView& w, const char* op) const {
  if (!supports_weight(w.dtype))
    throw Error(fmt::format("cuda backend {}: weight dtype {} not supported", op,
                            dtype_name(w.dtype)));
  if (w.rows > 0 && w.cols > 0 && !on_device(w.data))
    throw Error(fmt::format("cuda backend {}: weight [{} x {}] is not in device memory (call "
                            "prepare_weight first)", op, w.rows, w.cols));
}

uint16_t* CudaBackend::bf16_workspace(std::size_t count, int which) {
  Bf16Workspace& w = bf16_ws_[which];
  if (count > w.elems) {
    not_capturing("a workspace reallocation");
    ++workspace_epoch_;
    if (w.p) DPA_CHECK_CUDA(cudaFree(w.p));  // synchronizes: nothing still reads it
    w.p = static_cast<uint16_t*>(alloc(count * sizeof(uint16_t)));
    w.elems = count;
  }
  return w.p;
}

float* CudaBackend::scratch(int64_t floats) {
  if (floats <= 0) return nullptr;
  if (static_cast<std::size_t>(floats) > attn_ws_floats_) {
    not_capturing("a workspace reallocation");
    ++workspace_epoch_;
    if (attn_ws_) DPA_CHECK_CUDA(cudaFree(attn_ws_));  // synchronizes: nothing still uses it
    attn_ws_ = static_cast<float*>(alloc(static_cast<std::size_t>(floats) * sizeof(float)));
    attn_ws_floats_ = static_cast<std::size_t>(floats);
  }
  return attn_ws_;
}

bool CudaBackend::kv_bf16(DType dtype) {
  if (dtype != DType::f32 && dtype != DType::bf16)
    throw Error(fmt::format("cuda backend: {} KV cache not supported", dtype_name(dtype)));
  return dtype == DType::bf16;
}

int CudaBackend::to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT32_MAX) throw Error(fmt::format("cuda backend: {} = {} does not fit cuBLAS's int", what, v));
  return static_cast<int>(v);
}

bool CudaBackend::capture_begin() {
  if (capturing_ || stream_ != lanes_[0]) return false;
  if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  capturing_ = true;
  return true;
}

void* CudaBackend::capture_end() {
  if (!capturing_) return nullptr;
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  const cudaError_t rc = cudaStreamEndCapture(stream_, &graph);
  if (rc == cudaSuccess && graph && cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) exec = nullptr;
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a failed capture leaves its error behind; the caller runs the ops instead
  return exec;
}

void CudaBackend::replay(void* graph) {
  DPA_CHECK_CUDA(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph), stream_));
}

void CudaBackend::drop_graph(void* graph) {
  if (graph) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph));
}

std::unique_ptr<Backend> make_cuda_backend(int device_ordinal) {
  return std::make_unique<CudaBackend>(device_ordinal);
}

}  // namespace dpa::backend
