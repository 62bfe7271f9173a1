#include "core/error.h"

namespace ds {

std::string with_location(const std::string& msg, const std::string& file, int64_t line) {
  if (file.empty()) return msg;
  // Built with append: GCC 12 gives a false -Wrestrict warning on the operator+ chain at -O3.
  std::string out = msg;
  out.append(" (").append(file);
  if (line > 0) out.append(":").append(std::to_string(line));
  out.append(")");
  return out;
}

void throw_bad_input(const std::string& msg, const std::string& file, int64_t line) {
  throw Error(ErrorKind::bad_input, with_location(msg, file, line));
}
void throw_usage(const std::string& msg) { throw Error(ErrorKind::usage, msg); }
void throw_runtime(const std::string& msg) { throw Error(ErrorKind::runtime, msg); }

}  // namespace ds
