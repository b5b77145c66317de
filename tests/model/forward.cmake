# Model forward tests on the small V3 and V2 fixtures of tests/golden (one process, no MPI).
if(EXISTS ${PROJECT_SOURCE_DIR}/tests/golden/fixtures/v3/config.json AND
   EXISTS ${PROJECT_SOURCE_DIR}/tests/golden/fixtures/v2/config.json)
  dpa_add_test(model_forward SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/forward_cache_test.cpp
               LIBS dpa_model GTest::gtest_main LABELS unit
               ARGS ${PROJECT_SOURCE_DIR}/tests/golden/fixtures/v3 ${PROJECT_SOURCE_DIR}/tests/golden/fixtures/v2)
endif()
