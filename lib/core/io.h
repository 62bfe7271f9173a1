#pragma once
// File I/O: '-' means stdin/stdout; names ending in .zst are (de)compressed transparently with zstd.
// Writers for real files write to "PATH.tmp.<pid>" and rename into place on commit(), so a crash or an error
// never leaves a partial output file; a writer destroyed without commit() removes its temporary file.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

namespace ds {

// Reads lines (without the trailing '\n'; a trailing '\r' is kept) from a file, '-' or a .zst file.
class LineReader {
 public:
  explicit LineReader(const std::string& path);
  ~LineReader();
  // Next line into *line; false at EOF. *had_newline tells whether the line ended with '\n' (a truncated last
  // line has none).
  bool next(std::string* line, bool* had_newline = nullptr);
  int64_t line_number() const { return line_no_; }  // 1-based number of the line last returned
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  int64_t line_no_ = 0;
};

// Whole-file read (with .zst decompression). Bad-input error naming the path when it cannot be opened.
std::string read_file(const std::string& path);

class Writer {
 public:
  explicit Writer(const std::string& path);  // '-' = stdout (then commit() only flushes)
  ~Writer();                                  // removes the temporary file unless committed
  void write(std::string_view s);
  void commit();  // flush, close, fsync and rename into place; runtime error on failure (disk full, ...)
  // Pushes buffered records out now (streaming to a pipe); a file still appears only at commit().
  void flush();
  const std::string& path() const { return path_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// Atomically replaces PATH with bytes (temp file + fsync + rename). No compression.
void write_file_atomic(const std::string& path, std::string_view bytes);

bool path_exists(const std::string& path);
bool is_directory(const std::string& path);

}  // namespace ds
