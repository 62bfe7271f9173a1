#include "cmd/common/program.h"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>

#include <ds/build_info.h>

#include "core/error.h"
#include "core/log.h"
#if defined(DS_HAVE_CUDA) && DS_HAVE_CUDA
#include "kernels/cuda_device.h"
#endif

namespace ds {

namespace {

void print_error(const std::string& msg) { log_error(msg); }

// stdout carries the program's data: a failed write there (disk full, closed pipe) must not exit 0.
int check_stdout(int rc) {
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    int e = errno;
    print_error(std::string("write to stdout failed") + (e ? std::string(": ") + std::strerror(e) : std::string()));
    return rc == 0 ? static_cast<int>(ErrorKind::runtime) : rc;
  }
  return rc;
}

}  // namespace

int run_program(const char* name, const std::function<int()>& body) {
  log_set_program(name);
  int rc = 0;
  try {
    rc = body();
  } catch (const Error& e) {
    print_error(e.what());
    rc = e.exit_code();
  } catch (const CLI::Error& e) {  // parse errors from a direct app.parse() outside parse_cli
    if (e.get_exit_code() == 0) {
      rc = 0;
    } else {
      print_error(e.what());
      rc = static_cast<int>(ErrorKind::usage);
    }
  } catch (const std::bad_alloc&) {
    print_error("out of memory");
    rc = static_cast<int>(ErrorKind::runtime);
  } catch (const std::exception& e) {
    print_error(e.what());
    rc = static_cast<int>(ErrorKind::runtime);
  }
  return check_stdout(rc);
}

int parse_cli(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::Error& e) {
    if (e.get_exit_code() == 0) {
      // --help / --help-all / --version: CLI11 prints them to stdout.
      app.exit(e, std::cout, std::cerr);
      std::cout.flush();
      return 0;
    }
    std::fprintf(stderr, "%s: error: %s\nRun with --help for more information.\n", log_program().c_str(), e.what());
    return static_cast<int>(ErrorKind::usage);
  }
  return -1;
}

void add_common_options(CLI::App& app, CommonOptions& opts, unsigned which) {
  app.add_option("--log-level", opts.log_level, "Log level on stderr: debug, info, warn, error or quiet")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "quiet"}))
      ->capture_default_str();
  // The name is read when the flag fires: run_program has set it by then.
  app.set_version_flag("--version", std::function<std::string()>([] { return version_string(log_program()); }),
                       "Print version and build facts, then exit");
  if (which & kOptDevice)
    app.add_option("--device", opts.device, "Device: cpu, cuda or cuda:N")->capture_default_str();
  if (which & kOptThreads)
    app.add_option("--threads", opts.threads, "CPU threads (0 = all cores)")
        ->check(CLI::Range(0, 1 << 16))
        ->capture_default_str();
  if (which & kOptSeed) app.add_option("--seed", opts.seed, "Random seed")->capture_default_str();
}

Context apply_common_options(const CommonOptions& opts) {
  log_set_level(log_level_parse(opts.log_level));
  Context ctx;
  ctx.device = Device::parse(opts.device);
  if (ctx.device.is_cuda()) {
#if defined(DS_HAVE_CUDA) && DS_HAVE_CUDA
    int n = cuda::device_count();
    if (ctx.device.index >= n)
      throw_usage("--device " + opts.device + ": " + std::to_string(n) + " usable CUDA device(s) on this machine");
#else
    throw_usage("--device " + opts.device + ": this build has no CUDA support");
#endif
  }
  init_threads(ctx, opts.threads);
  return ctx;
}

std::string version_string(const std::string& name) {
  std::string type = DS_BUILD_TYPE;
  for (char& c : type) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::string cuda = DS_BUILD_CUDA;
  std::string s = name + " " + DS_VERSION + " (git " + DS_GIT_SHA + ", CUDA " + cuda + ", MPI off, " + type + ")";
#if defined(DS_HAVE_CUDA) && DS_HAVE_CUDA
  s += "\n" + cuda::describe();
#endif
  return s;
}

}  // namespace ds
