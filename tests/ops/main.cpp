// main() of every GPU parity binary in tests/ops: skips (exit 77, ctest SKIP_RETURN_CODE) when no CUDA device is
// usable, so `make test` passes on GPU-less machines; otherwise runs the Catch2 session.
#if __has_include(<catch2/catch.hpp>)
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>  // Catch2 v2
#else
#include <catch2/catch_session.hpp>  // Catch2 v3
#endif

#include <cstdio>

#include "kernels/cuda_device.h"

int main(int argc, char** argv) {
  if (ds::cuda::device_count() == 0) {
    std::printf("skipped: no CUDA device\n");
    return 77;
  }
  std::printf("%s\n", ds::cuda::describe().c_str());
  return Catch::Session().run(argc, argv);
}
