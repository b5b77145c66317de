// MPI start-up: thread level, node-local rank from MPI_Comm_split_type, the abort hook.
#include "dist/runtime.h"

#include <fmt/format.h>

#include "core/error.h"

namespace dpa::dist {

Runtime::Runtime(int* argc, char*** argv) {
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw Error("MPI_Init_thread failed");
  // Errors come back as codes so that DPA_CHECK_MPI can print where they happened.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  set_abort_handler([](int code) { MPI_Abort(MPI_COMM_WORLD, code); });
  DPA_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  DPA_CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  DPA_CHECK_MPI(MPI_Get_processor_name(name, &len));
  host_.assign(name, static_cast<std::size_t>(len));
  DPA_CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_));
  DPA_CHECK_MPI(MPI_Comm_rank(node_, &local_rank_));
  DPA_CHECK_MPI(MPI_Comm_size(node_, &local_size_));
  auto& id = process_identity();
  id.world_rank = rank_;
  id.world_size = size_;
  id.host = host_;
  if (provided < MPI_THREAD_FUNNELED)
    throw Error(fmt::format("MPI provides thread level {} but dpa_serve needs MPI_THREAD_FUNNELED", provided));
}

Runtime::~Runtime() {
  if (node_ != MPI_COMM_NULL) MPI_Comm_free(&node_);
  set_abort_handler(nullptr);
  MPI_Finalize();
}

void check_launch(int world_size, int launcher_tasks) {
  if (world_size == 1 && launcher_tasks > 1)
    throw Error(fmt::format(
        "MPI reports a world of 1 rank but the launcher started {} tasks: each task runs alone. "
        "Under Slurm launch with `srun --mpi=pmix` (or use mpirun)", launcher_tasks));
}

void abort_job(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<std::size_t>(len));
}

}  // namespace dpa::dist
