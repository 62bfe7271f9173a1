#include "core/progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/log.h"

namespace ds {

namespace {

constexpr double kTtyRedrawS = 0.1;  // a terminal bar redraws at most 10 times a second
constexpr int kBarWidth = 24;

// 1234 -> "1234", 12345 -> "12.3k", 1.2e6 -> "1.20M": short enough for a bar line.
std::string human(double v) {
  char buf[32];
  double a = std::fabs(v);
  if (a < 10000) std::snprintf(buf, sizeof buf, a < 100 && v != std::floor(v) ? "%.1f" : "%.0f", v);
  else if (a < 1e6) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else if (a < 1e9) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  return buf;
}

std::string clock_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto t = static_cast<long long>(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  return buf;
}

bool silent() { return log_level() >= LogLevel::warn; }

}  // namespace

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total, double interval_s)
    : label_(std::move(label)), total_(total), interval_s_(interval_s), start_s_(now_seconds()),
      tty_(::isatty(STDERR_FILENO) == 1) {}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& status) {
  if (finished_) return;
  done_ = done;
  status_ = status;
  if (silent()) return;
  double now = now_seconds();
  if (now - last_s_ < (tty_ ? kTtyRedrawS : interval_s_)) return;
  last_s_ = now;
  draw(now, false);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (silent()) return;
  // A terminal bar gets its final state and a newline; a log gets a closing line only if it saw progress
  // lines before (short jobs stay quiet).
  if (tty_ || drawn_) draw(now_seconds(), true);
}

void Progress::draw(double now, bool final_line) {
  double elapsed = now - start_s_;
  double rate = elapsed > 0 ? double(done_) / elapsed : 0.0;
  std::string s = label_;
  if (total_ > 0) {
    double frac = std::min(1.0, std::max(0.0, double(done_) / double(total_)));
    if (tty_) {
      int fill = static_cast<int>(frac * kBarWidth);
      s += " [" + std::string(size_t(fill), '#') + std::string(size_t(kBarWidth - fill), '.') + "]";
    }
    char pct[16];
    std::snprintf(pct, sizeof pct, " %3.0f%%", frac * 100);
    s += pct;
    s += " " + human(double(done_)) + "/" + human(double(total_));
  } else {
    s += " " + human(double(done_));
  }
  s += " " + human(rate) + "/s";
  if (final_line) s += " in " + clock_text(elapsed);
  else if (total_ > 0) s += " ETA " + (rate > 0 ? clock_text(double(total_ - done_) / rate) : std::string("?"));
  if (!status_.empty()) s += " | " + status_;

  std::string out;
  if (tty_) out = "\r" + s + "\x1b[K" + (final_line ? "\n" : "");  // \x1b[K clears what a longer line left
  else out = log_program() + ": info: " + s + "\n";
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace ds
