add_test(NAME engine_batch_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/batch_e2e.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:dpa_serve>
                 ${PROJECT_SOURCE_DIR}/inputs/sample_batch.jsonl ${CMAKE_CURRENT_BINARY_DIR}/batch_e2e)
set_tests_properties(engine_batch_e2e PROPERTIES LABELS "mpi;engine" TIMEOUT 1500)
add_test(NAME engine_prefix_cache_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/prefix_cache_e2e.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:dpa_serve>
                 ${CMAKE_CURRENT_BINARY_DIR}/prefix_cache_e2e)
set_tests_properties(engine_prefix_cache_e2e PROPERTIES LABELS "mpi;engine" TIMEOUT 900)
add_test(NAME engine_fault_e2e
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/fault_e2e.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:dpa_serve>
                 ${PROJECT_SOURCE_DIR}/inputs/sample_batch.jsonl ${CMAKE_CURRENT_BINARY_DIR}/fault_e2e)
set_tests_properties(engine_fault_e2e PROPERTIES LABELS "mpi;engine" TIMEOUT 600)
