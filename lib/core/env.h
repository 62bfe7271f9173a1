#pragma once
// Environment switches: the A/B knobs of the benchmarks (bench/README.md), read by the CUDA kernels and the trainer.

namespace ds {

// False when the environment variable `name` is "0"; on otherwise (unset included). Reads the environment on each
// call; callers on a hot path keep the answer in a static.
bool env_switch(const char* name);
// True only when the environment variable `name` is "1": an opt-in A/B knob.
bool env_opt_in(const char* name);

}  // namespace ds
