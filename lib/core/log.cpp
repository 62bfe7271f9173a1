#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "core/error.h"

namespace ds {

namespace {
// Process-wide settings, written once by main before any threads start; the level is atomic so that worker
// threads may read it while main changes it.
std::string g_program = "ds";
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
std::mutex g_write_mutex;  // one whole line per write, so lines from threads never interleave

void emit(LogLevel level, const char* tag, const std::string& msg) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  std::string line = g_program + ": " + tag + ": " + msg + "\n";
  std::lock_guard<std::mutex> lock(g_write_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}
}  // namespace

void log_set_program(const std::string& name) { g_program = name; }
const std::string& log_program() { return g_program; }
void log_set_level(LogLevel level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

LogLevel log_level_parse(const std::string& s) {
  if (s == "debug") return LogLevel::debug;
  if (s == "info") return LogLevel::info;
  if (s == "warn" || s == "warning") return LogLevel::warn;
  if (s == "error") return LogLevel::error;
  if (s == "quiet") return LogLevel::quiet;
  throw_usage("unknown log level '" + s + "' (expected debug, info, warn, error or quiet)");
}

void log_debug(const std::string& msg) { emit(LogLevel::debug, "debug", msg); }
void log_info(const std::string& msg) { emit(LogLevel::info, "info", msg); }
void log_warn(const std::string& msg) { emit(LogLevel::warn, "warning", msg); }
void log_error(const std::string& msg) { emit(LogLevel::error, "error", msg); }

}  // namespace ds
