#pragma once
// Logging on stderr: "ds-NAME: level: message". The program name is set once by the program's main.
#include <string>

namespace ds {

enum class LogLevel : int { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

void log_set_program(const std::string& name);  // e.g. "ds-pretrain"
const std::string& log_program();
void log_set_level(LogLevel level);
LogLevel log_level();
LogLevel log_level_parse(const std::string& s);  // debug|info|warn|error|quiet; usage error otherwise

void log_debug(const std::string& msg);
void log_info(const std::string& msg);
void log_warn(const std::string& msg);
void log_error(const std::string& msg);  // always printed unless quiet: "ds-NAME: error: msg"

}  // namespace ds
