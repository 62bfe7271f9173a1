# Build facts for --version: git sha, CUDA arch, MPI.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                OUTPUT_VARIABLE DS_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT DS_GIT_SHA)
  set(DS_GIT_SHA "unknown")
endif()
if(DS_HAVE_CUDA)
  set(DS_BUILD_CUDA "sm_${CMAKE_CUDA_ARCHITECTURES}")
else()
  set(DS_BUILD_CUDA "off")
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/build_info.h.in ${CMAKE_BINARY_DIR}/generated/ds/build_info.h @ONLY)
