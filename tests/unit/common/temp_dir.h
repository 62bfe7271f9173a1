#pragma once
// A fresh directory under /tmp per test, removed afterwards.
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace ds::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/ds_test.XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

inline size_t count_entries(const std::string& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++n;
  return n;
}

}  // namespace ds::test
