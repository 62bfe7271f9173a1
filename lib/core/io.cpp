#include "core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace ds {

namespace {

constexpr size_t kChunk = 1 << 18;  // read/write granularity: large enough that syscalls are rare

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_zst(const std::string& path) { return ends_with(path, ".zst"); }
std::string errno_text(int e) { return std::strerror(e); }

// A byte stream from a file or stdin, decompressed on the fly when the name ends in .zst (streaming, so
// memory stays bounded whatever the file size).
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path) {
    if (path == "-") {
      fd_ = STDIN_FILENO;
      own_ = false;
    } else {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) throw_bad_input("cannot open " + path + ": " + errno_text(errno));
      struct stat st {};
      if (::fstat(fd_, &st) == 0 && S_ISDIR(st.st_mode)) {
        ::close(fd_);
        throw_bad_input("cannot read " + path + ": " + errno_text(EISDIR));
      }
      if (is_zst(path)) {
        dctx_ = ZSTD_createDStream();
        if (!dctx_) { ::close(fd_); throw_runtime("out of memory creating a zstd stream"); }
        ZSTD_initDStream(dctx_);
        in_buf_.resize(ZSTD_DStreamInSize());
      }
    }
  }
  ~ByteSource() {
    if (dctx_) ZSTD_freeDStream(dctx_);
    if (own_ && fd_ >= 0) ::close(fd_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Up to cap bytes into dst; 0 only at the end of the data.
  size_t read(char* dst, size_t cap) {
    if (!dctx_) return read_raw(dst, cap);
    ZSTD_outBuffer out{dst, cap, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        if (raw_eof_) break;
        size_t n = read_raw(in_buf_.data(), in_buf_.size());
        if (n == 0) { raw_eof_ = true; break; }
        in_ = ZSTD_inBuffer{in_buf_.data(), n, 0};
      }
      size_t r = ZSTD_decompressStream(dctx_, &out, &in_);
      if (ZSTD_isError(r)) throw_bad_input(std::string("corrupt zstd data: ") + ZSTD_getErrorName(r), path_);
      frame_done_ = (r == 0);
      // The output buffer may be full with more data still buffered inside zstd: the next call drains it.
    }
    if (out.pos == 0 && !frame_done_ && saw_input_)
      throw_bad_input("truncated zstd stream", path_);
    return out.pos;
  }

 private:
  size_t read_raw(char* dst, size_t cap) {
    for (;;) {
      ssize_t n = ::read(fd_, dst, cap);
      if (n >= 0) {
        if (n > 0) saw_input_ = true;
        return size_t(n);
      }
      if (errno == EINTR) continue;
      throw_runtime("read error on " + path_ + ": " + errno_text(errno));
    }
  }

  std::string path_;
  int fd_ = -1;
  bool own_ = true;
  ZSTD_DStream* dctx_ = nullptr;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool raw_eof_ = false;
  bool frame_done_ = false;
  bool saw_input_ = false;
};

// Output into a temporary file next to the destination (or stdout), optionally zstd-compressed, renamed into
// place on commit.
class Sink {
 public:
  Sink(const std::string& path, bool compress) : path_(path) {
    struct stat st {};
    if (path == "-") {
      fd_ = STDOUT_FILENO;
      to_stdout_ = true;
      std::fflush(stdout);  // keep order with anything already printed through stdio
    } else if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      // A device, FIFO or socket (/dev/null, a named pipe): write into it directly. Renaming a temporary file
      // onto it would replace the device node itself.
      if (S_ISDIR(st.st_mode)) throw_bad_input("cannot write " + path + ": it is a directory");
      fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd_ < 0) throw_bad_input("cannot open " + path + ": " + errno_text(errno));
      direct_ = true;
      if (compress) {
        cctx_ = ZSTD_createCCtx();
        if (!cctx_) throw_runtime("out of memory creating a zstd stream");
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, 3);
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
        zbuf_.resize(ZSTD_CStreamOutSize());
      }
    } else {
      tmp_ = path + ".tmp." + std::to_string(::getpid());
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
      if (fd_ < 0) throw_bad_input("cannot create " + path + ": " + errno_text(errno));
      if (compress) {
        cctx_ = ZSTD_createCCtx();
        if (!cctx_) { discard(); throw_runtime("out of memory creating a zstd stream"); }
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, 3);
        ZSTD_CCtx_setParameter(cctx_, ZSTD_c_checksumFlag, 1);
        zbuf_.resize(ZSTD_CStreamOutSize());
      }
    }
    buf_.reserve(kChunk);
  }
  ~Sink() {
    if (!committed_ && to_stdout_) {
      // Records already written to a pipe are good data: pass them on even when the program fails later.
      try { flush_buffer(); } catch (...) {}
    }
    if (!committed_) discard();
    if (cctx_) ZSTD_freeCCtx(cctx_);
  }
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  void write(std::string_view s) {
    DS_CHECK(!committed_, "write after commit on " + path_);
    if (buf_.size() + s.size() > kChunk) {
      flush_buffer();
      if (s.size() >= kChunk) { push(s, false); return; }
    }
    buf_.append(s);
  }

  void flush() { flush_buffer(); }

  void commit() {
    DS_CHECK(!committed_, "commit twice on " + path_);
    flush_buffer();
    if (cctx_) push({}, true);
    if (to_stdout_) {
      committed_ = true;
      return;
    }
    if (direct_) {
      int fd = fd_;
      fd_ = -1;
      if (::close(fd) != 0) fail("close");
      committed_ = true;
      return;
    }
    if (::fsync(fd_) != 0) fail("fsync");
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("close");
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename");
    committed_ = true;
    sync_parent_dir();
  }

 private:
  void flush_buffer() {
    if (buf_.empty()) return;
    push(buf_, false);
    buf_.clear();
  }

  // Compresses (when asked) and writes; `end` finishes the zstd frame.
  void push(std::string_view s, bool end) {
    if (!cctx_) { write_all(s.data(), s.size()); return; }
    ZSTD_inBuffer in{s.data(), s.size(), 0};
    ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      ZSTD_outBuffer out{zbuf_.data(), zbuf_.size(), 0};
      size_t left = ZSTD_compressStream2(cctx_, &out, &in, mode);
      if (ZSTD_isError(left)) throw_runtime(std::string("zstd compression failed: ") + ZSTD_getErrorName(left));
      write_all(zbuf_.data(), out.pos);
      if (end ? left == 0 : in.pos == in.size) break;
    }
  }

  void write_all(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail("write");
      }
      p += w;
      n -= size_t(w);
    }
  }

  [[noreturn]] void fail(const char* what) {
    int e = errno;
    throw_runtime(std::string(what) + " failed on " + path_ + ": " + errno_text(e));
  }

  void discard() {
    if (to_stdout_) return;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!tmp_.empty()) ::unlink(tmp_.c_str());
  }

  // The rename is durable only once the directory entry is on disk too; failure here is not an error
  // (some file systems refuse fsync on directories).
  void sync_parent_dir() {
    auto slash = path_.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      ::fsync(d);
      ::close(d);
    }
  }

  std::string path_, tmp_;
  int fd_ = -1;
  bool to_stdout_ = false;
  bool direct_ = false;  // writing straight into a device or FIFO (no temporary file, no rename)
  bool committed_ = false;
  ZSTD_CCtx* cctx_ = nullptr;
  std::vector<char> zbuf_;
  std::string buf_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------- LineReader

struct LineReader::Impl {
  explicit Impl(const std::string& path) : src(path) {}
  ByteSource src;
  std::string buf;  // bytes read but not yet returned start at pos
  size_t pos = 0;
  bool eof = false;
};

LineReader::LineReader(const std::string& path) : impl_(std::make_unique<Impl>(path)), path_(path) {}
LineReader::~LineReader() = default;

bool LineReader::next(std::string* line, bool* had_newline) {
  Impl& m = *impl_;
  size_t scan_from = m.pos;
  for (;;) {
    const char* base = m.buf.data();
    const void* nl = scan_from < m.buf.size() ? std::memchr(base + scan_from, '\n', m.buf.size() - scan_from) : nullptr;
    if (nl) {
      size_t end = size_t(static_cast<const char*>(nl) - base);
      line->assign(base + m.pos, end - m.pos);
      m.pos = end + 1;
      if (had_newline) *had_newline = true;
      ++line_no_;
      return true;
    }
    if (m.eof) {
      if (m.pos >= m.buf.size()) return false;
      line->assign(m.buf.data() + m.pos, m.buf.size() - m.pos);
      m.pos = m.buf.size();
      if (had_newline) *had_newline = false;
      ++line_no_;
      return true;
    }
    // Drop what was returned already, then append a chunk; only the unscanned tail needs scanning again.
    m.buf.erase(0, m.pos);
    scan_from = m.buf.size();
    m.pos = 0;
    size_t old = m.buf.size();
    m.buf.resize(old + kChunk);
    size_t n = m.src.read(m.buf.data() + old, kChunk);
    m.buf.resize(old + n);
    if (n == 0) m.eof = true;
  }
}

std::string read_file(const std::string& path) {
  ByteSource src(path);
  std::string out;
  for (;;) {
    size_t old = out.size();
    out.resize(old + kChunk);
    size_t n = src.read(out.data() + old, kChunk);
    out.resize(old + n);
    if (n == 0) return out;
  }
}

// ------------------------------------------------------------------------------------------------- Writer

struct Writer::Impl {
  Impl(const std::string& path, bool compress) : sink(path, compress) {}
  Sink sink;
};

Writer::Writer(const std::string& path) : impl_(std::make_unique<Impl>(path, path != "-" && is_zst(path))), path_(path) {}
Writer::~Writer() = default;
void Writer::write(std::string_view s) { impl_->sink.write(s); }
void Writer::commit() { impl_->sink.commit(); }
void Writer::flush() { impl_->sink.flush(); }

void write_file_atomic(const std::string& path, std::string_view bytes) {
  DS_CHECK(path != "-", "write_file_atomic needs a real path");
  Sink sink(path, false);
  sink.write(bytes);
  sink.commit();
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace ds
