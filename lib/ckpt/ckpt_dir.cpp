#include "ckpt/ckpt_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace fs = std::filesystem;

namespace ds {

namespace {

std::string errno_text() { return std::strerror(errno); }

std::string pid_suffix() { return std::to_string(static_cast<long>(::getpid())); }

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw_runtime("cannot open '" + path + "' for fsync: " + errno_text());
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories (EINVAL); the data itself is already durable.
  if (rc != 0 && !(directory && (saved == EINVAL || saved == EROFS)))
    throw_runtime("fsync of '" + path + "' failed: " + std::strerror(saved));
}

std::string parent_of(const std::string& path) {
  fs::path p = fs::path(path).parent_path();
  return p.empty() ? std::string(".") : p.string();
}

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

// A leftover FINAL.<tag>-<pid> may be cleaned up when its process is gone (or is us: our own writes are
// synchronous, so a leftover of ours is from an earlier, failed attempt).
bool owner_gone(long pid) {
  if (pid == static_cast<long>(::getpid())) return true;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

struct Leftover {
  std::string path;
  long pid;
};

// Entries next to FINAL named FINAL.<tag>-<digits>.
std::vector<Leftover> leftovers(const std::string& final_dir, const std::string& tag) {
  std::vector<Leftover> out;
  fs::path fin(final_dir);
  std::string prefix = fin.filename().string() + "." + tag + "-";
  std::error_code ec;
  fs::directory_iterator it(parent_of(final_dir), ec);
  if (ec) return out;
  for (const auto& e : it) {
    std::string name = e.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string digits = name.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    out.push_back({e.path().string(), std::stol(digits)});
  }
  return out;
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw_runtime("cannot rename '" + from + "' to '" + to + "': " + errno_text());
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// AtomicFile

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp-" + pid_suffix()) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_runtime("cannot create '" + tmp_ + "': " + errno_text());
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
  DS_CHECK(fd_ >= 0 && !committed_, "write to a closed AtomicFile");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_runtime("cannot write '" + path_ + "': " + errno_text());
    }
    p += w;
    n -= size_t(w);
  }
}

void AtomicFile::commit() {
  DS_CHECK(fd_ >= 0 && !committed_, "AtomicFile committed twice");
  if (::fsync(fd_) != 0) throw_runtime("fsync of '" + tmp_ + "' failed: " + errno_text());
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw_runtime("cannot close '" + tmp_ + "': " + errno_text());
  rename_or_throw(tmp_, path_);
  committed_ = true;
  fsync_path(parent_of(path_), true);
}

void write_text_file(const std::string& dir, const std::string& name, std::string_view content) {
  AtomicFile f((fs::path(dir) / name).string());
  f.write(content);
  f.commit();
}

void fsync_dir(const std::string& dir) { fsync_path(dir, true); }

// ---------------------------------------------------------------------------------------------------------
// Checkpoint directories

void recover_checkpoint_dir(const std::string& final_dir_in) {
  const std::string final_dir = strip_trailing_slashes(final_dir_in);
  std::error_code ec;
  auto olds = leftovers(final_dir, "old");
  auto tmps = leftovers(final_dir, "tmp");
  if (!fs::exists(final_dir, ec)) {
    for (const auto& old : olds) {
      if (!owner_gone(old.pid)) continue;  // a live writer is between its two renames
      std::string tmp = final_dir + ".tmp-" + std::to_string(old.pid);
      // The tmp of the same process was fully written and fsynced before FINAL was moved away.
      std::string winner = fs::is_directory(tmp, ec) ? tmp : old.path;
      rename_or_throw(winner, final_dir);
      fsync_path(parent_of(final_dir), true);
      break;
    }
  }
  if (!fs::exists(final_dir, ec)) {
    // Leftovers alone never were a committed checkpoint; a live writer's are left alone.
    for (const auto& t : tmps)
      if (owner_gone(t.pid) && t.path != final_dir) remove_tree(t.path);
    return;
  }
  for (const auto& v : {olds, tmps})
    for (const auto& l : v)
      if (owner_gone(l.pid) && fs::exists(l.path, ec)) remove_tree(l.path);
}

CheckpointDirWriter::CheckpointDirWriter(const std::string& final_dir)
    : final_(strip_trailing_slashes(final_dir)), tmp_(final_ + ".tmp-" + pid_suffix()) {
  if (final_.empty()) throw_usage("empty checkpoint directory name");
  std::error_code ec;
  fs::create_directories(parent_of(final_), ec);
  if (ec) throw_runtime("cannot create directory '" + parent_of(final_) + "': " + ec.message());
  if (fs::exists(final_, ec) && !fs::is_directory(final_, ec))
    throw_usage("'" + final_ + "' exists and is not a directory");
  recover_checkpoint_dir(final_);
  remove_tree(tmp_);
  if (::mkdir(tmp_.c_str(), 0755) != 0) throw_runtime("cannot create directory '" + tmp_ + "': " + errno_text());
}

CheckpointDirWriter::~CheckpointDirWriter() {
  if (!committed_) remove_tree(tmp_);
}

void CheckpointDirWriter::commit() {
  DS_CHECK(!committed_, "checkpoint committed twice");
  // 1. Everything under tmp must be durable before it can replace FINAL.
  std::error_code ec;
  for (fs::recursive_directory_iterator it(tmp_, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) fsync_path(it->path().string(), false);
    else if (it->is_directory(ec)) fsync_path(it->path().string(), true);
  }
  if (ec) throw_runtime("cannot list '" + tmp_ + "': " + ec.message());
  fsync_path(tmp_, true);

  // 2-4. Swap: FINAL -> FINAL.old-<pid>, tmp -> FINAL, remove old.
  const std::string old = final_ + ".old-" + pid_suffix();
  bool had_final = fs::exists(final_, ec);
  if (had_final) {
    remove_tree(old);
    rename_or_throw(final_, old);
  }
  if (::rename(tmp_.c_str(), final_.c_str()) != 0) {
    std::string why = errno_text();
    if (had_final) ::rename(old.c_str(), final_.c_str());  // put the previous checkpoint back
    throw_runtime("cannot rename '" + tmp_ + "' to '" + final_ + "': " + why);
  }
  committed_ = true;
  fsync_path(parent_of(final_), true);
  if (had_final) remove_tree(old);
}

}  // namespace ds
