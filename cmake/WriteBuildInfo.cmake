# Script mode: SRC, OUT, VERSION. Rewrites OUT only when the commit changed.
execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD OUTPUT_VARIABLE _commit
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR NOT _commit)
  set(_commit "unknown")
endif()
execute_process(COMMAND git -C "${SRC}" status --porcelain --untracked-files=no
                OUTPUT_VARIABLE _dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(_dirty)
  set(_commit "${_commit}-dirty")
endif()
set(_text "#pragma once\n#define DPA_BUILD_COMMIT \"${_commit}\"\n#define DPA_VERSION \"${VERSION}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" _old)
endif()
if(NOT "${_old}" STREQUAL "${_text}")
  file(WRITE "${OUT}" "${_text}")
endif()
