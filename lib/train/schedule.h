#pragma once
// Learning-rate schedules, as pure functions of the step (so a resumed run continues the same curve).
#include <cstdint>
#include <string>

namespace ds {

enum class LrSchedule { cosine, wsd, constant };

struct LrScheduleOptions {
  LrSchedule kind = LrSchedule::cosine;
  double lr = 3e-4;            // peak
  double min_lr_ratio = 0.1;   // floor = lr * min_lr_ratio (cosine end, wsd end)
  int64_t warmup_steps = 0;    // linear from lr/warmup to lr
  int64_t total_steps = 1;
  double decay_fraction = 0.2; // wsd: the last fraction of steps decays linearly (V3's constant + decay)
};

LrSchedule lr_schedule_parse(const std::string& s);  // cosine | wsd | constant; usage error otherwise
// lr for 1-based step `step`.
double lr_at(const LrScheduleOptions& o, int64_t step);

}  // namespace ds
