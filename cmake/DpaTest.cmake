# dpa_add_test(NAME SOURCES ... [LIBS ...] [LABELS ...] [NP n] [ARGS ...] [TIMEOUT s] [ENV VAR=value ...])
# Builds one test executable and registers it with CTest. NP > 0 runs it under mpiexec with
# that many ranks (--oversubscribe, so a 2-core CI machine runs 8). Exit code 77 means "skipped"
# (GPU tests on a machine without a GPU).
set(DPA_MPIEXEC_FLAGS --oversubscribe --bind-to none)
execute_process(COMMAND id -u OUTPUT_VARIABLE _uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(_uid STREQUAL "0")
  list(APPEND DPA_MPIEXEC_FLAGS --allow-run-as-root)
endif()

function(dpa_add_test name)
  cmake_parse_arguments(T "" "NP;TIMEOUT;TARGET" "SOURCES;LIBS;LABELS;ARGS;ENV" ${ARGN})
  if(NOT T_TARGET)
    set(T_TARGET ${name})
  endif()
  if(T_SOURCES)
    add_executable(${T_TARGET} ${T_SOURCES})
    target_link_libraries(${T_TARGET} PRIVATE ${T_LIBS} GTest::gtest)
  endif()
  if(T_NP)
    add_test(NAME ${name}
             COMMAND ${MPIEXEC_EXECUTABLE} ${DPA_MPIEXEC_FLAGS} ${MPIEXEC_NUMPROC_FLAG} ${T_NP}
                     $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
  else()
    add_test(NAME ${name} COMMAND $<TARGET_FILE:${T_TARGET}> ${T_ARGS})
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set(env OMPI_MCA_rmaps_base_oversubscribe=1 NCCL_NVLS_ENABLE=0 ${T_ENV})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" SKIP_RETURN_CODE 77 TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "${env}")
endfunction()
