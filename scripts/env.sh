# Environment shared by every launcher (mpirun wrapper, sbatch templates): Open MPI, UCX, NCCL.
# Sourced, not run. Override any value by exporting it before sourcing.
# Open MPI picks the UCX PML itself where UCX finds a network; set OMPI_MCA_pml=ucx to insist.
export OMPI_MCA_btl=${OMPI_MCA_btl:-^openib}               # the old verbs BTL only warns
export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-60}  # room to drain on SIGTERM
export NCCL_NVLS_ENABLE=0                                  # NVLink multicast stays off (shared hosts)
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export NCCL_IB_DISABLE=${NCCL_IB_DISABLE:-0}
# Names of the variables mpirun must forward to the ranks (used as -x NAME).
DPA_FORWARD_ENV="LD_LIBRARY_PATH NCCL_NVLS_ENABLE NCCL_DEBUG NCCL_IB_DISABLE UCX_TLS OMPI_MCA_pml DPA_API_KEY"
