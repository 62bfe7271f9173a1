#pragma once
// Progress reporting on stderr: a live bar (\r-redrawn) when stderr is a terminal, otherwise a plain line at
// most every `interval_s` seconds (for logs and Slurm). Silent at log level warn or above.
#include <cstdint>
#include <string>

namespace ds {

class Progress {
 public:
  Progress(std::string label, int64_t total, double interval_s = 10.0);  // total <= 0: unknown
  ~Progress();  // finishes the bar line
  // Sets the position and an extra status text (e.g. "loss 3.21 | 1.2k tok/s"); redraws when due.
  void update(int64_t done, const std::string& status = "");
  void finish();

 private:
  std::string label_;
  int64_t total_;
  double interval_s_;
  double start_s_;
  double last_s_ = -1e9;
  bool tty_;
  bool finished_ = false;
  void draw(double now, bool final_line);
  int64_t done_ = 0;
  std::string status_;
  bool drawn_ = false;  // something was printed (the bar is on screen, or a plain line went out)
};

double now_seconds();  // monotonic clock

}  // namespace ds
