# Writes the build commit into a generated header at every build (not only at configure time).
set(DPA_VERSION_HEADER "${CMAKE_BINARY_DIR}/generated/dpa_build_info.h")
add_custom_target(dpa_build_info
  COMMAND ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DOUT=${DPA_VERSION_HEADER}
          -DVERSION=${PROJECT_VERSION} -P ${CMAKE_SOURCE_DIR}/cmake/WriteBuildInfo.cmake
  BYPRODUCTS ${DPA_VERSION_HEADER}
  COMMENT "build commit")

# dpa_module_library(NAME "SOURCES" DEPS...): a static library of a module's globbed sources, or an
# interface library while the module has none yet, so dependents link either way.
function(dpa_module_library name sources)
  if(sources)
    add_library(${name} STATIC ${sources})
    target_link_libraries(${name} PUBLIC ${ARGN})
  else()
    add_library(${name} INTERFACE)
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()
