# Tests of the checkpoint part of src/model: config parsing, the safetensors reader, make-model.
dpa_add_test(model_checkpoint
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_config_test.cpp
          ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint_safetensors_test.cpp
          ${CMAKE_CURRENT_SOURCE_DIR}/make_model_test.cpp
  LIBS dpa_model GTest::gtest_main
  LABELS unit)
