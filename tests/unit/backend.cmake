# CPU backend op tests, each against an independent naive formula (double precision) in the test.
dpa_add_test(unit_backend_ops SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/backend_ops_test.cpp
             ${CMAKE_CURRENT_SOURCE_DIR}/backend_moe_test.cpp
             LIBS dpa_backend GTest::gtest_main LABELS unit)
