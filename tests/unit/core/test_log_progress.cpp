#include <catch2/catch.hpp>

#include <unistd.h>

#include "core/error.h"
#include "core/io.h"
#include "core/log.h"
#include "core/progress.h"
#include "std_redirect.h"
#include "../common/temp_dir.h"

using namespace ds;
using ds::test::TempDir;

namespace {
// Restores the process-wide log settings whatever a test does.
struct LogGuard {
  ~LogGuard() {
    log_set_level(LogLevel::info);
    log_set_program("ds");
  }
};
}  // namespace

TEST_CASE("log lines carry the program name and level", "[log]") {
  LogGuard guard;
  TempDir d;
  log_set_program("ds-test");
  CHECK(log_program() == "ds-test");
  {
    ds::test::Redirect err(STDERR_FILENO, d.file("err.txt"));
    log_set_level(LogLevel::info);
    log_debug("hidden");
    log_info("hello");
    log_warn("careful");
    log_error("broken");
    log_set_level(LogLevel::error);
    log_info("hidden too");
    log_error("still shown");
    log_set_level(LogLevel::quiet);
    log_error("silenced");
  }
  CHECK(read_file(d.file("err.txt")) ==
        "ds-test: info: hello\nds-test: warning: careful\nds-test: error: broken\nds-test: error: still shown\n");
}

TEST_CASE("log_level_parse", "[log]") {
  CHECK(log_level_parse("debug") == LogLevel::debug);
  CHECK(log_level_parse("quiet") == LogLevel::quiet);
  CHECK(log_level_parse("warn") == LogLevel::warn);
  try {
    log_level_parse("loud");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
  }
}

TEST_CASE("progress on a non-terminal prints plain periodic lines", "[progress]") {
  LogGuard guard;
  TempDir d;
  log_set_program("ds-test");
  {
    ds::test::Redirect err(STDERR_FILENO, d.file("err.txt"));
    REQUIRE(::isatty(STDERR_FILENO) == 0);
    Progress p("train", 200, 0.0);
    p.update(100, "loss 3.21");
    p.update(200, "loss 2.00");
    p.finish();
  }
  std::string out = read_file(d.file("err.txt"));
  CHECK(out.find("ds-test: info: train  50% 100/200") != std::string::npos);
  CHECK(out.find("| loss 3.21\n") != std::string::npos);
  CHECK(out.find("ETA") != std::string::npos);
  CHECK(out.find("100% 200/200") != std::string::npos);
  CHECK(out.find('\r') == std::string::npos);

  {
    ds::test::Redirect err(STDERR_FILENO, d.file("err2.txt"));
    Progress p("slow", 0, 3600.0);  // unknown total, long interval: only the first update prints
    p.update(1);
    p.update(2);
  }
  std::string out2 = read_file(d.file("err2.txt"));
  CHECK(out2.find("ds-test: info: slow 1 ") == 0);
  CHECK(std::count(out2.begin(), out2.end(), '\n') == 2);  // the first update and the closing line

  log_set_level(LogLevel::warn);
  {
    ds::test::Redirect err(STDERR_FILENO, d.file("err3.txt"));
    Progress p("quiet", 10, 0.0);
    p.update(5);
  }
  CHECK(read_file(d.file("err3.txt")).empty());
  CHECK(now_seconds() > 0);
}
