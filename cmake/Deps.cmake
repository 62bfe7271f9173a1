# Finds every dependency (Debian 12 packages; see ../shared/TOOLCHAIN.md for why each find looks as it does).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(MPI 3.1 REQUIRED COMPONENTS CXX)
find_package(CLI11 2 CONFIG REQUIRED)
find_package(simdjson 3 CONFIG REQUIRED)
find_package(zstd 1.5 CONFIG REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
# OpenBLAS built for OpenMP (libopenblas-openmp-dev), linked by its own path: BLAS then runs on the same OpenMP
# thread pool as our loops. Debian's default pthread variant spins its own threads next to OpenMP's and made
# training 18x slower on 2 cores (measured; see lib/README.md).
find_path(OPENBLAS_OMP_INCLUDE_DIR cblas.h PATHS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp
          NO_DEFAULT_PATH)
find_library(OPENBLAS_OMP_LIBRARY openblas PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp
             NO_DEFAULT_PATH)
if(NOT OPENBLAS_OMP_INCLUDE_DIR OR NOT OPENBLAS_OMP_LIBRARY)
  message(FATAL_ERROR "OpenBLAS (OpenMP variant) not found: apt-get install libopenblas-openmp-dev (make deps)")
endif()
set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)
add_library(ds_sentencepiece INTERFACE)
target_link_libraries(ds_sentencepiece INTERFACE PkgConfig::SENTENCEPIECE)
add_library(ds_openblas INTERFACE)
target_include_directories(ds_openblas SYSTEM INTERFACE ${OPENBLAS_OMP_INCLUDE_DIR})
target_link_libraries(ds_openblas INTERFACE ${OPENBLAS_OMP_LIBRARY} OpenMP::OpenMP_CXX)
if(BUILD_TESTING)
  find_package(Catch2 2 CONFIG REQUIRED)
  include(Catch)
endif()

# CUDA: built when nvcc is there, skipped cleanly when it is not (DS_CUDA=OFF forces it off).
option(DS_CUDA "Build the CUDA kernels when nvcc is available" ON)
set(DS_HAVE_CUDA OFF)
if(DS_CUDA)
  if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # 90a: Hopper with its arch-specific instructions (wgmma, used by the grouped expert GEMM); its code runs on
      # compute capability 9.0 only. Other GPUs: set CMAKE_CUDA_ARCHITECTURES (the wgmma kernels are then left out).
      set(CMAKE_CUDA_ARCHITECTURES 90a)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    if(CMAKE_VERSION VERSION_LESS 3.25.2)
      # CMake 3.25.1 has no C++20 flag for nvcc.
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(DS_HAVE_CUDA ON)
  else()
    message(STATUS "ds: nvcc not found, building without CUDA")
  endif()
endif()
