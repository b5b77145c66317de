# Writes the build commit into a generated header at every build (not only at configure time).
set(DPA_VERSION_HEADER "${CMAKE_BINARY_DIR}/generated/dpa_build_info.h")
add_custom_target(dpa_build_info
  COMMAND ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DOUT=${DPA_VERSION_HEADER}
          -DVERSION=${PROJECT_VERSION} -P ${CMAKE_SOURCE_DIR}/cmake/WriteBuildInfo.cmake
  BYPRODUCTS ${DPA_VERSION_HEADER}
  COMMENT "build commit")
