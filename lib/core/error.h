#pragma once
// Errors and exit codes (DESIGN.md, command-line contract).
//
// Library code throws ds::Error with a kind; programs catch it once in main (cmd/common) and map the kind
// to an exit status: 0 ok, 1 runtime failure, 2 usage error, 3 bad input data.
// Messages read "what went wrong (file:line)" — the program name prefix is added by the catcher.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace ds {

enum class ErrorKind : int { runtime = 1, usage = 2, bad_input = 3 };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string msg) : std::runtime_error(std::move(msg)), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return static_cast<int>(kind_); }

 private:
  ErrorKind kind_;
};

// "msg (file:line)" when a location is known; line 0 means "whole file".
std::string with_location(const std::string& msg, const std::string& file, int64_t line = 0);

[[noreturn]] void throw_bad_input(const std::string& msg, const std::string& file = "", int64_t line = 0);
[[noreturn]] void throw_usage(const std::string& msg);
[[noreturn]] void throw_runtime(const std::string& msg);

}  // namespace ds

// Internal invariant / argument checks in the library: a failed DS_CHECK is a programming or shape error
// (runtime failure, exit 1), never bad user data — validate user data with throw_bad_input.
#define DS_CHECK(cond, msg)                                                                          \
  do {                                                                                               \
    if (!(cond)) ::ds::throw_runtime(std::string("internal check failed: ") + (msg) + " [" #cond "] at " \
                                     + __FILE__ + ":" + std::to_string(__LINE__));                  \
  } while (0)
