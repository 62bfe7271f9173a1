#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <new>

#include "cmd/common/program.h"
#include "core/error.h"
#include "core/io.h"
#include "core/log.h"
#include "std_redirect.h"
#include "../common/temp_dir.h"

using namespace ds;
using ds::test::TempDir;

namespace {

struct Captured {
  int rc = 0;
  std::string out, err;
};

// Runs f with stdout and stderr captured into files.
Captured capture(const std::function<int()>& f) {
  TempDir d;
  Captured c;
  {
    ds::test::Redirect out(STDOUT_FILENO, d.file("out"));
    ds::test::Redirect err(STDERR_FILENO, d.file("err"));
    c.rc = f();
  }
  c.out = read_file(d.file("out"));
  c.err = read_file(d.file("err"));
  log_set_level(LogLevel::info);
  return c;
}

Captured run_cli(std::vector<std::string> args, CommonOptions* opts_out = nullptr, unsigned which = 0) {
  return capture([&] {
    return run_program("ds-x", [&] {
      CLI::App app{"test program", "ds-x"};
      CommonOptions opts;
      add_common_options(app, opts, which);
      std::string input;
      app.add_option("input", input, "Input JSONL")->required();
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      int rc = parse_cli(app, int(argv.size()), argv.data());
      if (opts_out) *opts_out = opts;
      return rc;
    });
  });
}

}  // namespace

TEST_CASE("version_string names the build", "[program]") {
  std::string v = version_string("ds-x");
  CHECK(v.rfind("ds-x 0.1.0 (git ", 0) == 0);
  CHECK(v.find("CUDA ") != std::string::npos);
  CHECK(v.find("MPI off") != std::string::npos);
}

TEST_CASE("parse_cli: help, version, usage errors", "[program]") {
  auto help = run_cli({"ds-x", "--help"});
  CHECK(help.rc == 0);
  CHECK(help.out.find("--log-level") != std::string::npos);
  CHECK(help.out.find("--version") != std::string::npos);
  CHECK(help.err.empty());

  auto ver = run_cli({"ds-x", "--version"});  // works although the required input is missing
  CHECK(ver.rc == 0);
  CHECK(ver.out.rfind("ds-x 0.1.0", 0) == 0);

  auto bad = run_cli({"ds-x", "--no-such-flag", "in.jsonl"});
  CHECK(bad.rc == 2);
  CHECK(bad.err.rfind("ds-x: error: ", 0) == 0);
  CHECK(bad.err.find("Run with --help for more information.") != std::string::npos);

  auto missing = run_cli({"ds-x"});
  CHECK(missing.rc == 2);

  auto level = run_cli({"ds-x", "--log-level", "loud", "in.jsonl"});
  CHECK(level.rc == 2);

  CommonOptions opts;
  auto ok = run_cli({"ds-x", "--threads", "3", "--seed", "99", "--device", "cpu", "--log-level", "warn", "in.jsonl"},
                    &opts, kOptDevice | kOptThreads | kOptSeed);
  CHECK(ok.rc == -1);
  CHECK(opts.threads == 3);
  CHECK(opts.seed == 99);
  CHECK(opts.log_level == "warn");

  auto not_enabled = run_cli({"ds-x", "--seed", "5", "in.jsonl"});  // --seed not selected for this program
  CHECK(not_enabled.rc == 2);
}

TEST_CASE("run_program maps exceptions to exit codes", "[program]") {
  auto bad_input = capture([] { return run_program("ds-x", [] () -> int { throw_bad_input("bad record", "f.jsonl", 2); }); });
  CHECK(bad_input.rc == 3);
  CHECK(bad_input.err == "ds-x: error: bad record (f.jsonl:2)\n");

  auto usage = capture([] { return run_program("ds-x", [] () -> int { throw_usage("--foo needs --bar"); }); });
  CHECK(usage.rc == 2);

  auto rt = capture([] { return run_program("ds-x", [] () -> int { throw_runtime("disk on fire"); }); });
  CHECK(rt.rc == 1);
  CHECK(rt.err == "ds-x: error: disk on fire\n");

  auto oom = capture([] { return run_program("ds-x", [] () -> int { throw std::bad_alloc(); }); });
  CHECK(oom.rc == 1);
  CHECK(oom.err == "ds-x: error: out of memory\n");

  auto other = capture([] { return run_program("ds-x", [] () -> int { throw std::logic_error("odd"); }); });
  CHECK(other.rc == 1);
  CHECK(other.err == "ds-x: error: odd\n");

  auto fine = capture([] { return run_program("ds-x", [] { std::printf("data\n"); return 0; }); });
  CHECK(fine.rc == 0);
  CHECK(fine.out == "data\n");
}

TEST_CASE("run_program reports a failed stdout write", "[program]") {
  if (!path_exists("/dev/full")) return;
  TempDir d;
  int rc = 0;
  {
    ds::test::Redirect err(STDERR_FILENO, d.file("err"));
    ds::test::Redirect out(STDOUT_FILENO, "/dev/full");
    rc = run_program("ds-x", [] { std::printf("lost\n"); return 0; });
  }
  std::clearerr(stdout);
  CHECK(rc == 1);
  CHECK(read_file(d.file("err")).find("ds-x: error: write to stdout failed") == 0);
}

TEST_CASE("apply_common_options sets level, threads and device", "[program]") {
  CommonOptions opts;
  opts.threads = 1;
  opts.log_level = "error";
  Context ctx = apply_common_options(opts);
  CHECK(ctx.threads == 1);
  CHECK(ctx.device.is_cpu());
  CHECK(log_level() == LogLevel::error);
  log_set_level(LogLevel::info);

  opts.device = "tpu";
  CHECK_THROWS_AS(apply_common_options(opts), Error);
  log_set_level(LogLevel::info);
}
