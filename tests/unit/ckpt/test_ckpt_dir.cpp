// Atomic checkpoint directories: commit, abandon, replace, and the recovery rule after a crash.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ckpt/ckpt_dir.h"
#include "tmpdir.h"

using namespace ds;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Entries of dir whose names start with prefix.
int count_prefixed(const std::string& dir, const std::string& prefix) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) ++n;
  return n;
}

// The pid of a process that has exited (and was reaped), to fake the leftovers of a crashed writer.
long dead_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  int st;
  waitpid(p, &st, 0);
  return long(p);
}

void make_ckpt(const std::string& dir, const std::string& content) {
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << content;
}

}  // namespace

TEST_CASE("commit publishes the directory and leaves nothing temporary", "[ckpt_dir]") {
  test::TmpDir root;
  std::string fin = root / "runs/step-100";  // parents are created
  {
    CheckpointDirWriter w(fin);
    REQUIRE(fs::is_directory(w.tmp_dir()));
    CHECK_FALSE(fs::exists(fin));
    write_text_file(w.tmp_dir(), "config.json", "{\"a\": 1}\n");
    fs::create_directories(w.tmp_dir() + "/sub");
    write_text_file(w.tmp_dir() + "/sub", "x.txt", "x");
    w.commit();
  }
  CHECK(slurp(fin + "/config.json") == "{\"a\": 1}\n");
  CHECK(slurp(fin + "/sub/x.txt") == "x");
  CHECK(count_prefixed(root / "runs", "step-100.") == 0);
}

TEST_CASE("a writer destroyed before commit leaves the old checkpoint untouched", "[ckpt_dir]") {
  test::TmpDir root;
  std::string fin = root / "ckpt";
  make_ckpt(fin, "old");
  std::string tmp;
  try {
    CheckpointDirWriter w(fin);
    tmp = w.tmp_dir();
    write_text_file(w.tmp_dir(), "config.json", "new-but-incomplete");
    throw std::runtime_error("simulated failure while writing");
  } catch (const std::runtime_error&) {
  }
  CHECK(slurp(fin + "/config.json") == "old");
  CHECK_FALSE(fs::exists(tmp));
  CHECK(count_prefixed(root.path, "ckpt.") == 0);
}

TEST_CASE("commit replaces an existing checkpoint as a whole", "[ckpt_dir]") {
  test::TmpDir root;
  std::string fin = root / "ckpt";
  make_ckpt(fin, "old");
  std::ofstream(fin + "/only-in-old.txt") << "stale";
  CheckpointDirWriter w(fin);
  write_text_file(w.tmp_dir(), "config.json", "new");
  w.commit();
  CHECK(slurp(fin + "/config.json") == "new");
  CHECK_FALSE(fs::exists(fin + "/only-in-old.txt"));
  CHECK(count_prefixed(root.path, "ckpt.") == 0);
}

TEST_CASE("AtomicFile replaces the file on commit only", "[ckpt_dir]") {
  test::TmpDir root;
  std::string p = root / "f.txt";
  {
    AtomicFile f(p);
    f.write("partial");
  }
  CHECK_FALSE(fs::exists(p));
  CHECK(count_prefixed(root.path, "f.txt") == 0);
  std::ofstream(p) << "before";
  {
    AtomicFile f(p);
    f.write("after");
    CHECK(slurp(p) == "before");
    f.commit();
  }
  CHECK(slurp(p) == "after");
}

TEST_CASE("recovery after a crash between the two renames", "[ckpt_dir]") {
  test::TmpDir root;
  std::string fin = root / "ckpt";
  std::string pid = std::to_string(dead_pid());

  SECTION("only the old checkpoint moved away: it comes back") {
    make_ckpt(fin + ".old-" + pid, "old");
    recover_checkpoint_dir(fin);
    CHECK(slurp(fin + "/config.json") == "old");
  }
  SECTION("old moved away and the new one complete: the new one wins") {
    make_ckpt(fin + ".old-" + pid, "old");
    make_ckpt(fin + ".tmp-" + pid, "new");
    recover_checkpoint_dir(fin);
    CHECK(slurp(fin + "/config.json") == "new");
  }
  SECTION("a crash before commit: the half-written tmp is discarded, FINAL stays") {
    make_ckpt(fin, "old");
    make_ckpt(fin + ".tmp-" + pid, "half");
    recover_checkpoint_dir(fin);
    CHECK(slurp(fin + "/config.json") == "old");
  }
  SECTION("a new writer recovers first") {
    make_ckpt(fin + ".old-" + pid, "old");
    CheckpointDirWriter w(fin);
    CHECK(slurp(fin + "/config.json") == "old");
  }
  CHECK(count_prefixed(root.path, "ckpt.") == 0);
}

TEST_CASE("leftovers of a live process are not touched", "[ckpt_dir]") {
  test::TmpDir root;
  std::string fin = root / "ckpt";
  // pid 1 is always alive (and never us).
  make_ckpt(fin + ".old-1", "old");
  recover_checkpoint_dir(fin);
  CHECK_FALSE(fs::exists(fin));
  CHECK(fs::exists(fin + ".old-1"));
}
