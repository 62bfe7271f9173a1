#pragma once
// What every ds-* program shares: the error-to-exit-code mapping, the common options and --version.
//
//   int main(int argc, char** argv) {
//     return ds::run_program("ds-tokenize", [&] {
//       CLI::App app{"..."};
//       ds::CommonOptions common;
//       ds::add_common_options(app, common, ds::kOptThreads | ds::kOptSeed);
//       ... CLI11_PARSE-equivalent: ds::parse_cli(app, argc, argv) returns an exit code or -1 to continue
//       ds::apply_common_options(common);   // log level, threads
//       ... call lib/ ...
//       return 0;
//     });
//   }
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>

#include "tensor/context.h"

namespace ds {

// Runs body; maps ds::Error to its exit code (1 runtime, 2 usage, 3 bad input) with
// "ds-NAME: error: message" on stderr, std::bad_alloc and other exceptions to 1. Flushes stdout and reports
// a failed stdout write (e.g. disk full) as a runtime error.
int run_program(const char* name, const std::function<int()>& body);

// Parses argv. Returns -1 to go on, or the exit code to return now (0 after --help/--version, 2 on a usage
// error, with CLI11's message as "ds-NAME: error: ...").
int parse_cli(CLI::App& app, int argc, char** argv);

enum CommonOptionBits : unsigned {
  kOptDevice = 1u << 0,   // --device cpu|cuda[:N]
  kOptThreads = 1u << 1,  // --threads N
  kOptSeed = 1u << 2,     // --seed N
};

struct CommonOptions {
  std::string device = "cpu";
  int threads = 0;  // 0 = all cores
  uint64_t seed = 1234;
  std::string log_level = "info";
};

// Adds --log-level and --version always, plus the options selected by `which`.
void add_common_options(CLI::App& app, CommonOptions& opts, unsigned which);
// Applies the log level; builds the context (device, threads).
Context apply_common_options(const CommonOptions& opts);

// "ds-NAME 0.1.0 (git abc123, CUDA sm_90|off, MPI on, release)" plus, with CUDA, the runtime and GPUs.
std::string version_string(const std::string& name);

}  // namespace ds
