#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ds {

LrSchedule lr_schedule_parse(const std::string& s) {
  if (s == "cosine") return LrSchedule::cosine;
  if (s == "wsd") return LrSchedule::wsd;
  if (s == "constant") return LrSchedule::constant;
  throw_usage("unknown lr schedule '" + s + "' (cosine, wsd or constant)");
}

double lr_at(const LrScheduleOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step <= o.warmup_steps) return o.lr * double(step) / double(o.warmup_steps);
  const double floor = o.lr * o.min_lr_ratio;
  const int64_t span = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
  const double t = std::clamp(double(step - o.warmup_steps) / double(span), 0.0, 1.0);
  switch (o.kind) {
    case LrSchedule::constant: return o.lr;
    case LrSchedule::cosine: return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
    case LrSchedule::wsd: {
      const double start = 1.0 - o.decay_fraction;
      if (t <= start) return o.lr;
      return o.lr + (floor - o.lr) * (t - start) / std::max(o.decay_fraction, 1e-12);
    }
  }
  return o.lr;
}

}  // namespace ds
