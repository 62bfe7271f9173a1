#pragma once
// Points stdin, stdout or stderr at a file for the lifetime of the object, to test the '-' paths.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

namespace ds::test {

class Redirect {
 public:
  Redirect(int fd, const std::string& path) : fd_(fd) {
    std::fflush(fd == STDERR_FILENO ? stderr : stdout);
    saved_ = ::dup(fd);
    int f = fd == STDIN_FILENO ? ::open(path.c_str(), O_RDONLY) : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved_ < 0 || f < 0) throw std::runtime_error("redirect failed");
    ::dup2(f, fd);
    ::close(f);
  }
  ~Redirect() {
    std::fflush(fd_ == STDERR_FILENO ? stderr : stdout);
    ::dup2(saved_, fd_);
    ::close(saved_);
  }

 private:
  int fd_;
  int saved_;
};

}  // namespace ds::test
