#pragma once
// A scratch directory removed at the end of a test.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace ds::test {

struct TmpDir {
  std::string path;
  TmpDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ds_test_ckpt.XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TmpDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

}  // namespace ds::test
