#include "core/error.h"

namespace ds {

std::string with_location(const std::string& msg, const std::string& file, int64_t line) {
  if (file.empty()) return msg;
  if (line > 0) return msg + " (" + file + ":" + std::to_string(line) + ")";
  return msg + " (" + file + ")";
}

void throw_bad_input(const std::string& msg, const std::string& file, int64_t line) {
  throw Error(ErrorKind::bad_input, with_location(msg, file, line));
}
void throw_usage(const std::string& msg) { throw Error(ErrorKind::usage, msg); }
void throw_runtime(const std::string& msg) { throw Error(ErrorKind::runtime, msg); }

}  // namespace ds
