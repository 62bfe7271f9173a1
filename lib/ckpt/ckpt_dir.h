#pragma once
// Crash-safe files and checkpoint directories (POSIX rename is atomic within one file system).
//
// A checkpoint directory FINAL is written as FINAL.tmp-<pid>, then CheckpointDirWriter::commit()
//   1. fsyncs every file and directory under FINAL.tmp-<pid>,
//   2. renames an existing FINAL to FINAL.old-<pid>,
//   3. renames FINAL.tmp-<pid> to FINAL and fsyncs the parent directory,
//   4. removes FINAL.old-<pid>.
// Recovery rule (recover_checkpoint_dir, run by every CheckpointDirWriter before it starts): only leftovers of
// processes that no longer run are touched.
//   - FINAL exists: it is complete. FINAL.tmp-P and FINAL.old-P are garbage and are removed.
//   - FINAL is missing and FINAL.old-P exists: P crashed between steps 2 and 3. FINAL.tmp-P, if present, is
//     complete (step 1 finished before step 2), so it becomes FINAL and FINAL.old-P is removed; otherwise
//     FINAL.old-P is renamed back to FINAL.
//   - FINAL is missing and only FINAL.tmp-P exists: P crashed before committing; there never was a complete
//     FINAL, so FINAL.tmp-P is removed.
// So after a crash at any point a reader sees the old or the new complete checkpoint, never a mix.
#include <string>
#include <string_view>

namespace ds {

// A file written to "PATH.tmp-<pid>" and renamed onto PATH by commit() after fsync (the directory is fsynced
// too, so the file survives a crash once commit() returns). Destroyed without commit(): the temporary file is
// removed and PATH is untouched. Write errors (disk full, ...) are runtime errors naming PATH.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Atomically replaces DIR/NAME with `content` (AtomicFile).
void write_text_file(const std::string& dir, const std::string& name, std::string_view content);

// fsync of a directory, so that renames and new entries in it are durable.
void fsync_dir(const std::string& dir);

// Applies the recovery rule above to FINAL and its leftovers; a no-op when there are none.
void recover_checkpoint_dir(const std::string& final_dir);

// Writes a checkpoint directory atomically (see the top of this file). One writer per directory per process.
class CheckpointDirWriter {
 public:
  // Recovers FINAL (recover_checkpoint_dir), creates FINAL's parent directories and an empty FINAL.tmp-<pid>.
  explicit CheckpointDirWriter(const std::string& final_dir);
  ~CheckpointDirWriter();  // removes the temporary directory unless committed
  CheckpointDirWriter(const CheckpointDirWriter&) = delete;
  CheckpointDirWriter& operator=(const CheckpointDirWriter&) = delete;

  const std::string& tmp_dir() const { return tmp_; }  // write everything here
  const std::string& final_dir() const { return final_; }
  void commit();  // runtime error on failure; the old FINAL then still exists (or is recoverable)

 private:
  std::string final_;
  std::string tmp_;
  bool committed_ = false;
};

}  // namespace ds
