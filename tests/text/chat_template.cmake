# Chat templates: unit tests (syntax errors, raise_exception), and the comparison with Python's
# jinja2 (the oracle, run as a fixture into the build dir) on real model templates.
dpa_add_test(chat_template_unit
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/chat_template_unit_test.cpp
  LIBS dpa_text GTest::gtest_main
  LABELS unit)

set(_dpa_tpl_dir ${CMAKE_CURRENT_SOURCE_DIR}/templates)
set(_dpa_tpl_oracle ${CMAKE_CURRENT_BINARY_DIR}/chat_template_oracle.json)
if(EXISTS /usr/bin/python3)
  add_test(NAME chat_template_oracle
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/chat_template_oracle.py
                   ${_dpa_tpl_dir} ${_dpa_tpl_dir}/messages.json ${_dpa_tpl_oracle})
else()
  add_test(NAME chat_template_oracle
           COMMAND sh -c "echo 'chat_template_oracle: /usr/bin/python3 is missing; run scripts/setup.sh' >&2; exit 1")
endif()
set_tests_properties(chat_template_oracle PROPERTIES FIXTURES_SETUP chat_template_oracle
                     LABELS unit TIMEOUT 120)

dpa_add_test(chat_template_vs_jinja2
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/chat_template_oracle_test.cpp
  LIBS dpa_text
  LABELS unit
  ARGS ${_dpa_tpl_dir} ${_dpa_tpl_dir}/messages.json ${_dpa_tpl_oracle})
set_tests_properties(chat_template_vs_jinja2 PROPERTIES FIXTURES_REQUIRED chat_template_oracle)
