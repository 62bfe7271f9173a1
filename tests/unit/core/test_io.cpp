#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/io.h"
#include "std_redirect.h"
#include "../common/temp_dir.h"

using namespace ds;
using ds::test::TempDir;

namespace {

std::vector<std::pair<std::string, bool>> read_lines(const std::string& path) {
  LineReader r(path);
  std::vector<std::pair<std::string, bool>> out;
  std::string line;
  bool nl = false;
  while (r.next(&line, &nl)) {
    out.emplace_back(line, nl);
    REQUIRE(r.line_number() == int64_t(out.size()));
  }
  return out;
}

std::string error_of(const std::function<void()>& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

std::string big_text() {
  std::string s;
  for (int i = 0; i < 40000; ++i) s += "line " + std::to_string(i) + " " + std::string(size_t(i % 50), 'x') + "\n";
  return s;  // about 1.3 MB: several read chunks
}

}  // namespace

TEST_CASE("LineReader splits lines and reports the missing final newline", "[io]") {
  TempDir d;
  ds::test::write_raw(d.file("a.txt"), "one\ntwo\r\n\nlast");
  auto lines = read_lines(d.file("a.txt"));
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == std::make_pair(std::string("one"), true));
  CHECK(lines[1] == std::make_pair(std::string("two\r"), true));  // '\r' is kept
  CHECK(lines[2] == std::make_pair(std::string(""), true));
  CHECK(lines[3] == std::make_pair(std::string("last"), false));

  ds::test::write_raw(d.file("empty.txt"), "");
  CHECK(read_lines(d.file("empty.txt")).empty());
  ds::test::write_raw(d.file("nl.txt"), "\n");
  CHECK(read_lines(d.file("nl.txt")).size() == 1);
}

TEST_CASE("LineReader handles lines longer than its read chunk", "[io]") {
  TempDir d;
  std::string longline(700000, 'q');
  ds::test::write_raw(d.file("long.txt"), "a\n" + longline + "\nb\n");
  auto lines = read_lines(d.file("long.txt"));
  REQUIRE(lines.size() == 3);
  CHECK(lines[1].first == longline);
  CHECK(lines[2].first == "b");
}

TEST_CASE("open failures are bad-input errors naming the path", "[io]") {
  TempDir d;
  ErrorKind kind{};
  std::string msg = error_of([&] { LineReader r(d.file("missing.jsonl")); }, &kind);
  CHECK(kind == ErrorKind::bad_input);
  CHECK(msg.find("missing.jsonl") != std::string::npos);
  CHECK(msg.find("No such file or directory") != std::string::npos);

  msg = error_of([&] { read_file(d.path()); }, &kind);
  CHECK(kind == ErrorKind::bad_input);
  CHECK(msg.find("Is a directory") != std::string::npos);

  msg = error_of([&] { Writer w(d.file("no/such/dir/out.jsonl")); }, &kind);
  CHECK(kind == ErrorKind::bad_input);
  CHECK(msg.find("out.jsonl") != std::string::npos);
}

TEST_CASE("zstd round trip through Writer, LineReader and read_file", "[io]") {
  TempDir d;
  std::string text = big_text();
  {
    Writer w(d.file("x.jsonl.zst"));
    for (size_t i = 0; i < text.size(); i += 1000) w.write(std::string_view(text).substr(i, 1000));
    w.commit();
  }
  std::string compressed = read_file(d.file("x.jsonl.zst"));  // read_file decompresses
  CHECK(compressed == text);

  LineReader r(d.file("x.jsonl.zst"));
  std::string line;
  int n = 0;
  bool nl = false;
  while (r.next(&line, &nl)) {
    REQUIRE(line.rfind("line " + std::to_string(n) + " ", 0) == 0);
    REQUIRE(nl);
    ++n;
  }
  CHECK(n == 40000);

  // The file on disk really is zstd (magic 28 b5 2f fd) and smaller than the text.
  std::filesystem::copy_file(d.file("x.jsonl.zst"), d.file("raw.bin"));
  std::string raw = read_file(d.file("raw.bin"));
  REQUIRE(raw.size() > 4);
  CHECK(raw.substr(0, 4) == std::string("\x28\xb5\x2f\xfd", 4));
  CHECK(raw.size() < text.size() / 3);

  SECTION("a truncated .zst is bad input") {
    ds::test::write_raw(d.file("cut.txt.zst"), raw.substr(0, raw.size() / 2));
    ErrorKind kind{};
    std::string msg = error_of([&] { read_file(d.file("cut.txt.zst")); }, &kind);
    CHECK(kind == ErrorKind::bad_input);
    CHECK(msg.find("cut.txt.zst") != std::string::npos);
  }
  SECTION("garbage in a .zst is bad input") {
    ds::test::write_raw(d.file("bad.zst"), "this is not zstd at all\n");
    ErrorKind kind{};
    std::string msg = error_of([&] { read_file(d.file("bad.zst")); }, &kind);
    CHECK(kind == ErrorKind::bad_input);
    CHECK(msg.find("zstd") != std::string::npos);
  }
}

TEST_CASE("Writer is atomic: nothing at the final path before commit", "[io]") {
  TempDir d;
  std::string out = d.file("out.jsonl");
  std::string tmp = out + ".tmp." + std::to_string(::getpid());
  {
    Writer w(out);
    w.write("{\"a\":1}\n");
    CHECK_FALSE(path_exists(out));
    CHECK(path_exists(tmp));
    w.commit();
    CHECK(path_exists(out));
    CHECK_FALSE(path_exists(tmp));
  }
  CHECK(read_file(out) == "{\"a\":1}\n");

  SECTION("an uncommitted writer leaves no file, and the old content stays") {
    {
      Writer w(out);
      w.write("partial");
      CHECK(path_exists(tmp));
    }
    CHECK_FALSE(path_exists(tmp));
    CHECK(read_file(out) == "{\"a\":1}\n");
    CHECK(ds::test::count_entries(d.path()) == 1);
  }
  SECTION("an uncommitted .zst writer leaves nothing either") {
    {
      Writer w(d.file("z.jsonl.zst"));
      w.write(big_text());
    }
    CHECK(ds::test::count_entries(d.path()) == 1);
  }
}

TEST_CASE("write_file_atomic replaces a file", "[io]") {
  TempDir d;
  std::string p = d.file("config.json");
  write_file_atomic(p, "old");
  write_file_atomic(p, "new content");
  CHECK(read_file(p) == "new content");
  CHECK(ds::test::count_entries(d.path()) == 1);
  CHECK(path_exists(p));
  CHECK_FALSE(is_directory(p));
  CHECK(is_directory(d.path()));
  CHECK_FALSE(path_exists(d.file("nope")));
}

TEST_CASE("'-' reads stdin and writes stdout", "[io]") {
  TempDir d;
  ds::test::write_raw(d.file("in.txt"), "x\ny\n");
  {
    ds::test::Redirect in(STDIN_FILENO, d.file("in.txt"));
    auto lines = read_lines("-");
    REQUIRE(lines.size() == 2);
    CHECK(lines[1].first == "y");
  }
  {
    ds::test::Redirect out(STDOUT_FILENO, d.file("out.txt"));
    Writer w("-");
    w.write("hello\n");
    w.commit();
  }
  CHECK(read_file(d.file("out.txt")) == "hello\n");
  CHECK(ds::test::count_entries(d.path()) == 2);  // no temporary file for stdout
}

TEST_CASE("Writer into a device or FIFO writes through it and never replaces it", "[io]") {
  struct stat before {};
  REQUIRE(::stat("/dev/null", &before) == 0);
  REQUIRE(S_ISCHR(before.st_mode));
  {
    ds::Writer w("/dev/null");
    w.write("{\"a\": 1}\n");
    w.commit();
  }
  ds::write_file_atomic("/dev/null", "x");
  struct stat after {};
  REQUIRE(::stat("/dev/null", &after) == 0);
  CHECK(S_ISCHR(after.st_mode));
  CHECK(after.st_rdev == before.st_rdev);
}
