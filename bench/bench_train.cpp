// ds-bench-train: CPU training throughput of a preset model next to the sgemm ceiling of the same machine.
//
// 1. sgemm ceiling. cblas_sgemm (the BLAS the ops call) at every GEMM shape a training step of the model runs,
//    plus one large square shape, on the same threads. A training step runs each linear layer three times:
//      forward  out[M,N]  = in[M,K] · W[N,K]^T     (NoTrans, Trans)
//      d_in     d_in[M,K] = d_out[M,N] · W[N,K]    (NoTrans, NoTrans)
//      d_W      d_W[N,K] += d_out^T · in           (Trans, NoTrans)
//    so each shape is timed as that triple (best of several repeats after a warm-up, each GEMM on its own),
//    rate = 3 * 2*M*N*K / time. "ceiling" = the best rate of any shape. "gemm mix" = the rate the step's GEMMs
//    would reach if each ran at its measured speed: sum(flops) / sum(count * time) over the step's shapes.
// 2. Training. The preset with --vocab, random token windows (ds::Rng), ds::Model + ds::AdamW driven as the
//    trainer does: zero_grads, forward, backward, AdamW step, update_router_bias. --warmup steps untimed, then
//    --steps timed with a wall clock per phase.
// 3. Model FLOPs per token (the usual 6N + attention convention; recomputation and elementwise work not counted):
//      flops/token = 6 * P_active + 3 * A * (H * (dqk + dv) * (T + 1))
//    P_active = matmul parameters one token goes through:
//      per attention block (L main + D_mtp MTP blocks): q_a + q_b (or q_proj), kv_a, kv_b, o_proj
//      per dense block: 3 * D * intermediate
//      per MoE block (main MoE layers + MTP blocks): router D*E + shared 3*D*F*n_shared + routed top-K 3*D*F*K
//      lm_head D*V for the main head and again for each MTP module's head, plus each MTP module's eh_proj 2D*D
//    attention: per token and attention block, causal average (T+1)/2 keys, QK^T (dqk) and PV (dv) at 2 flops
//    per multiply-add: forward 2 * (T+1)/2 * H * (dqk+dv) = (T+1) * H * (dqk+dv); training = 3x forward.
//    A = L + D_mtp attention blocks. Embedding lookups and norms count zero.
#include <cblas.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "cmd/common/program.h"
#include "core/error.h"
#include "core/json.h"
#include "core/progress.h"
#include "core/rng.h"
#include "model/config.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace {

struct Shape {
  std::string name;
  int64_t M, N, K;
  int64_t count = 0;     // forward GEMMs of this shape per training step (0 = reference shape only)
  double seconds = 0;    // best time of the fwd + d_in + d_W triple
  double flops() const { return 6.0 * double(M) * double(N) * double(K); }
  double gflops() const { return seconds > 0 ? flops() / seconds * 1e-9 : 0; }
};

// The forward GEMMs of one training step, merged by shape. Routed experts see N*K/E rows on average.
std::vector<Shape> step_shapes(const ds::ModelConfig& c, int64_t tokens) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads, L = c.num_hidden_layers,
                Dm = c.num_nextn_predict_layers, E = c.n_routed_experts, F = c.moe_intermediate_size;
  int64_t n_moe = 0;
  for (int64_t l = 0; l < L; ++l) n_moe += c.is_moe_layer(l);
  const int64_t n_dense = L - n_moe + (E > 0 ? 0 : Dm);
  n_moe += E > 0 ? Dm : 0;
  const int64_t A = L + Dm;
  std::vector<Shape> v;
  auto add = [&](const std::string& name, int64_t M, int64_t N, int64_t K, int64_t count) {
    if (count <= 0 || M <= 0) return;
    for (Shape& s : v)
      if (s.M == M && s.N == N && s.K == K) {
        s.name += "," + name;
        s.count += count;
        return;
      }
    v.push_back(Shape{name, M, N, K, count});
  };
  if (c.q_lora_rank > 0) {
    add("q_a", tokens, c.q_lora_rank, D, A);
    add("q_b", tokens, H * c.qk_head_dim(), c.q_lora_rank, A);
  } else {
    add("q_proj", tokens, H * c.qk_head_dim(), D, A);
  }
  add("kv_a", tokens, c.kv_lora_rank + c.qk_rope_head_dim, D, A);
  add("kv_b", tokens, H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, A);
  add("o_proj", tokens, D, H * c.v_head_dim, A);
  add("mlp.gate/up", tokens, c.intermediate_size, D, 2 * n_dense);
  add("mlp.down", tokens, D, c.intermediate_size, n_dense);
  if (E > 0) {
    add("router", tokens, E, D, n_moe);
    add("shared.gate/up", tokens, F * c.n_shared_experts, D, 2 * n_moe * (c.n_shared_experts > 0));
    add("shared.down", tokens, D, F * c.n_shared_experts, n_moe * (c.n_shared_experts > 0));
    const int64_t rows = tokens * c.num_experts_per_tok / E;
    add("expert.gate/up", rows, F, D, 2 * E * n_moe);
    add("expert.down", rows, D, F, E * n_moe);
  }
  add("eh_proj", tokens, D, 2 * D, Dm);
  add("lm_head", tokens, c.vocab_size, D, 1 + Dm);
  return v;
}

double time_triple(Shape& s, int reps) {
  const int64_t M = s.M, N = s.N, K = s.K;
  std::vector<float> in(size_t(M * K)), w(size_t(N * K)), out(size_t(M * N)), d_in(size_t(M * K)), d_w(size_t(N * K));
  ds::Rng rng{1, 7, 0};
  for (auto* buf : {&in, &w, &out})
    for (float& x : *buf) x = float(rng.next_uniform() - 0.5);
  auto run = [&](int which) {
    if (which == 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.f, in.data(), int(K), w.data(),
                  int(K), 0.f, out.data(), int(N));
    else if (which == 1)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(K), int(N), 1.f, out.data(), int(N),
                  w.data(), int(K), 0.f, d_in.data(), int(K));
    else
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(N), int(K), int(M), 1.f, out.data(), int(N),
                  in.data(), int(K), 1.f, d_w.data(), int(K));
  };
  double total = 0;
  for (int which = 0; which < 3; ++which) {
    run(which);  // warm-up (BLAS buffers, page faults)
    // Repeat until both `reps` runs and ~20 ms have gone by; keep the best.
    double best = 1e30, spent = 0;
    for (int r = 0; r < reps || (spent < 0.02 && r < 1000); ++r) {
      const double t0 = ds::now_seconds();
      run(which);
      const double dt = ds::now_seconds() - t0;
      best = std::min(best, dt);
      spent += dt;
    }
    total += best;
  }
  s.seconds = total;
  return total;
}

struct ParamRow {
  std::string what;
  int64_t per_token;
};

double cpu_seconds() {  // CPU time of the whole process (all threads)
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Busy CPU seconds of the whole machine (all processes) from /proc/stat; < 0 when unreadable.
double machine_busy_seconds() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long v[8] = {};
  const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                            &v[5], &v[6], &v[7]);
  std::fclose(f);
  if (n < 8) return -1;
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
  const double ticks = double(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
  return ticks / double(sysconf(_SC_CLK_TCK));
}

std::string loadavg() {
  std::string s;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buf[128] = {};
    if (std::fgets(buf, sizeof buf, f)) s = buf;
    std::fclose(f);
  }
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

double r4(double x) {  // 4 significant digits for the JSON line
  if (x == 0 || !std::isfinite(x)) return x;
  const double m = std::pow(10.0, 3 - std::floor(std::log10(std::fabs(x))));
  return std::round(x * m) / m;
}

}  // namespace

int main(int argc, char** argv) {
  return ds::run_program("ds-bench-train", [&] {
    CLI::App app{"CPU training throughput of a preset model next to the measured sgemm ceiling of this machine."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    common.seed = 1;
    ds::add_common_options(app, common, ds::kOptThreads | ds::kOptSeed);
    std::string preset = "small";
    int64_t steps = 10, warmup = 2, batch = 8, seq_len = 256, vocab = 4096;
    int reps = 5;
    bool no_sgemm = false, no_train = false;
    app.add_option("--preset", preset, "Model preset (tiny, small)")->capture_default_str();
    app.add_option("--vocab", vocab, "Vocabulary size")->capture_default_str();
    app.add_option("--steps", steps, "Timed training steps")->capture_default_str();
    app.add_option("--warmup", warmup, "Untimed training steps first")->capture_default_str();
    app.add_option("--batch-size", batch, "Windows per step")->capture_default_str();
    app.add_option("--seq-len", seq_len, "Tokens per window")->capture_default_str();
    app.add_option("--sgemm-repeats", reps, "Minimum timed repeats per GEMM (best is kept)")->capture_default_str();
    app.add_flag("--no-sgemm", no_sgemm, "Skip the sgemm ceiling (e.g. when profiling training)");
    app.add_flag("--no-train", no_train, "Skip training (sgemm ceiling only)");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    if (steps < 1 || warmup < 0 || batch < 1 || seq_len < 1 || vocab < 2 || reps < 1)
      ds::throw_usage("--steps, --batch-size, --seq-len, --sgemm-repeats must be >= 1, --vocab >= 2, --warmup >= 0");
    ds::Context ctx = ds::apply_common_options(common);

    ds::ModelConfig cfg = ds::config_preset(preset);
    cfg.vocab_size = vocab;
    if (seq_len > cfg.max_position_embeddings) cfg.max_position_embeddings = seq_len;
    ds::config_validate(cfg, "--preset " + preset);
    const int64_t tokens = batch * seq_len;
    const std::string blas_core = openblas_get_corename();

    std::printf("ds-bench-train: preset %s (vocab %lld, %lld params incl. MTP), batch %lld x seq %lld = %lld "
                "tokens/step, %d threads\n",
                preset.c_str(), (long long)vocab, (long long)ds::config_param_count(cfg), (long long)batch,
                (long long)seq_len, (long long)tokens, ctx.threads);
    std::printf("load average at start: %s\n", loadavg().c_str());
    std::printf("BLAS: %s; sgemm kernels for core '%s'\n", openblas_get_config(), blas_core.c_str());
    // OpenBLAS's DYNAMIC_ARCH falls back to old SSE kernels on CPUs it does not know (e.g. newer Xeons under
    // KVM): the ceiling below is then that of the slow kernels, and so is training.
    const bool wide_cpu = __builtin_cpu_supports("avx512f") || __builtin_cpu_supports("avx2");
    const bool narrow_core = blas_core == "Prescott" || blas_core == "Core2" || blas_core == "Penryn" ||
                             blas_core == "Nehalem" || blas_core == "Katmai" || blas_core == "Dunnington" ||
                             blas_core == "Atom" || blas_core == "Barcelona";
    if (wide_cpu && narrow_core)
      std::printf("note: this CPU has %s but OpenBLAS chose the '%s' (SSE) kernels; OPENBLAS_CORETYPE=%s in the "
                  "environment selects the wide ones\n",
                  __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", blas_core.c_str(),
                  __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell");
    std::printf("\n");

    // ---- model FLOPs per token ----
    const int64_t D = cfg.hidden_size, H = cfg.num_attention_heads, L = cfg.num_hidden_layers,
                  Dm = cfg.num_nextn_predict_layers, E = cfg.n_routed_experts, F = cfg.moe_intermediate_size;
    int64_t n_moe = 0;
    for (int64_t l = 0; l < L; ++l) n_moe += cfg.is_moe_layer(l);
    const int64_t n_dense = L - n_moe + (E > 0 ? 0 : Dm);
    n_moe += E > 0 ? Dm : 0;
    const int64_t A = L + Dm;
    const int64_t attn = (cfg.q_lora_rank > 0 ? D * cfg.q_lora_rank + cfg.q_lora_rank * H * cfg.qk_head_dim()
                                              : D * H * cfg.qk_head_dim()) +
                         D * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) +
                         cfg.kv_lora_rank * H * (cfg.qk_nope_head_dim + cfg.v_head_dim) + H * cfg.v_head_dim * D;
    std::vector<ParamRow> rows = {
        {"attention projections (" + std::to_string(A) + " blocks x " + std::to_string(attn) + ")", A * attn},
        {"dense MLP (" + std::to_string(n_dense) + " x " + std::to_string(3 * D * cfg.intermediate_size) + ")",
         n_dense * 3 * D * cfg.intermediate_size},
    };
    if (E > 0) {
      rows.push_back({"router (" + std::to_string(n_moe) + " x " + std::to_string(D * E) + ")", n_moe * D * E});
      rows.push_back({"shared experts (" + std::to_string(n_moe) + " x " +
                          std::to_string(3 * D * F * cfg.n_shared_experts) + ")",
                      n_moe * 3 * D * F * cfg.n_shared_experts});
      rows.push_back({"routed experts, top-" + std::to_string(cfg.num_experts_per_tok) + " (" +
                          std::to_string(n_moe) + " x " + std::to_string(3 * D * F * cfg.num_experts_per_tok) + ")",
                      n_moe * 3 * D * F * cfg.num_experts_per_tok});
    }
    rows.push_back({"lm_head, main", D * vocab});
    if (Dm > 0) {
      rows.push_back({"MTP eh_proj (" + std::to_string(Dm) + " x " + std::to_string(2 * D * D) + ")", Dm * 2 * D * D});
      rows.push_back({"MTP head matmul (" + std::to_string(Dm) + " x " + std::to_string(D * vocab) + ")",
                      Dm * D * vocab});
    }
    int64_t p_active = 0;
    for (auto& r : rows) p_active += r.per_token;
    const double attn_fwd = double(A) * double(seq_len + 1) * double(H) * double(cfg.qk_head_dim() + cfg.v_head_dim);
    const double flops_token = 6.0 * double(p_active) + 3.0 * attn_fwd;
    std::printf("Active matmul parameters per token (MTP blocks counted with the attention/MoE rows):\n");
    for (auto& r : rows) std::printf("  %-52s %12lld\n", r.what.c_str(), (long long)r.per_token);
    std::printf("  %-52s %12lld\n", "total P_active", (long long)p_active);
    std::printf("  %-52s %12.0f\n", "attention scores+values, fwd flops/token", attn_fwd);
    std::printf("Training flops/token = 6 * P_active + 3 * attention = %.4g (%.3f MFLOP/token)\n\n", flops_token,
                flops_token * 1e-6);

    // ---- sgemm ceiling ----
    std::vector<Shape> shapes = step_shapes(cfg, tokens);
    shapes.push_back(Shape{"square 1024^3", 1024, 1024, 1024, 0});
    double ceiling = 0, mix_gflops = 0, mix_flops = 0, mix_seconds = 0;
    std::string best_name;
    if (!no_sgemm) {
      std::printf("sgemm (OpenBLAS), fwd + d_in + d_W triple per shape, best of >= %d after warm-up:\n", reps);
      std::printf("  %-34s %6s %6s %6s %6s %10s\n", "shape", "M", "N", "K", "count", "GFLOP/s");
      for (Shape& s : shapes) {
        time_triple(s, reps);
        std::printf("  %-34s %6lld %6lld %6lld %6lld %10.1f\n", s.name.c_str(), (long long)s.M, (long long)s.N,
                    (long long)s.K, (long long)s.count, s.gflops());
        std::fflush(stdout);
        if (s.gflops() > ceiling) ceiling = s.gflops(), best_name = s.name;
        mix_flops += double(s.count) * s.flops();
        mix_seconds += double(s.count) * s.seconds;
      }
      mix_gflops = mix_seconds > 0 ? mix_flops / mix_seconds * 1e-9 : 0;
      std::printf("  ceiling (best shape: %s): %.1f GFLOP/s\n", best_name.c_str(), ceiling);
      std::printf("  gemm mix of one step (%.3g GFLOP, = 6*P_active*tokens: %.3g): %.1f GFLOP/s, %.3f s/step\n\n",
                  mix_flops * 1e-9, 6.0 * double(p_active) * double(tokens) * 1e-9, mix_gflops, mix_seconds);
    }

    // ---- training ----
    double t_fwd = 0, t_bwd = 0, t_opt = 0, t_other = 0, t_total = 0, t_best = 1e30, t_cpu = 0, last_loss = 0;
    std::vector<double> step_times;
    double others_cores = -1;  // average cores used by other processes during the timed steps
    if (!no_train) {
      ds::Model model(cfg, ctx);
      model.init_random(common.seed);
      ds::OptimizerOptions oo;
      ds::AdamW adamw(model, oo);
      ds::ForwardOptions fo;  // MTP on (lambda 0.3), balance loss off: ds-pretrain's defaults
      ds::Rng rng{common.seed, 42, 0};
      ds::Batch b;
      b.B = batch;
      b.T = seq_len;
      b.tokens.resize(size_t(batch * (seq_len + 1)));
      std::printf("training %lld warm-up + %lld timed steps ...\n", (long long)warmup, (long long)steps);
      std::fflush(stdout);
      double busy0 = -1, wall0 = 0;
      for (int64_t step = 1; step <= warmup + steps; ++step) {
        if (step == warmup + 1) busy0 = machine_busy_seconds(), wall0 = ds::now_seconds();
        for (int32_t& t : b.tokens) t = int32_t(rng.next_below(uint64_t(vocab)));
        const double c0 = cpu_seconds(), t0 = ds::now_seconds();
        model.zero_grads();
        model.reset_expert_load();
        const double t1 = ds::now_seconds();
        last_loss = model.forward(b, fo).loss;
        const double t2 = ds::now_seconds();
        model.backward();
        const double t3 = ds::now_seconds();
        adamw.step(step, 3e-4, 1.0);
        model.update_router_bias(0.001);
        const double t4 = ds::now_seconds(), c4 = cpu_seconds();
        if (!std::isfinite(last_loss)) ds::throw_runtime("loss is not finite at step " + std::to_string(step));
        if (step > warmup) {
          t_other += t1 - t0;
          t_fwd += t2 - t1;
          t_bwd += t3 - t2;
          t_opt += t4 - t3;
          t_total += t4 - t0;
          t_best = std::min(t_best, t4 - t0);
          step_times.push_back(t4 - t0);
          t_cpu += c4 - c0;
        }
      }
      std::printf("step times (s):");
      for (double t : step_times) std::printf(" %.2f", t);
      std::printf("\n");
      const double busy1 = machine_busy_seconds(), wall1 = ds::now_seconds();
      if (busy0 >= 0 && busy1 >= 0 && wall1 > wall0)
        others_cores = std::max(0.0, (busy1 - busy0 - t_cpu) / (wall1 - wall0));
    }
    const double tok_s = t_total > 0 ? double(tokens * steps) / t_total : 0;
    const double tok_s_best = t_total > 0 ? double(tokens) / t_best : 0;
    double t_median = 0;
    if (!step_times.empty()) {
      std::vector<double> st = step_times;
      std::sort(st.begin(), st.end());
      const size_t n = st.size();
      t_median = n % 2 ? st[n / 2] : 0.5 * (st[n / 2 - 1] + st[n / 2]);
    }
    const double tok_s_median = t_median > 0 ? double(tokens) / t_median : 0;
    // CPU time / (wall time * threads): well below 1 means the cores were shared with other work (or threads idled)
    const double cpu_util = t_total > 0 ? t_cpu / (t_total * double(ctx.threads)) : 0;
    const double model_gflops = tok_s * flops_token * 1e-9;
    const double frac = ceiling > 0 ? model_gflops / ceiling : 0;
    const double frac_mix = mix_gflops > 0 ? model_gflops / mix_gflops : 0;

    std::printf("\n| metric | value |\n|---|---|\n");
    if (!no_sgemm) {
      for (const Shape& s : shapes)
        std::printf("| sgemm %s (%lldx%lldx%lld) | %.1f GFLOP/s |\n", s.name.c_str(), (long long)s.M,
                    (long long)s.N, (long long)s.K, s.gflops());
      std::printf("| **sgemm ceiling** (best shape) | **%.1f GFLOP/s** |\n", ceiling);
      std::printf("| sgemm at the step's GEMM mix | %.1f GFLOP/s |\n", mix_gflops);
    }
    if (!no_train) {
      std::printf("| **train tokens/s** (mean of the timed steps) | **%.0f** |\n", tok_s);
      std::printf("| train tokens/s, median step / best step | %.0f / %.0f |\n", tok_s_median, tok_s_best);
      std::printf("| step time (mean) | %.3f s |\n", t_total / double(steps));
      std::printf("| CPU utilisation during training (cpu time / wall / threads) | %.0f%% |\n", 100 * cpu_util);
      if (others_cores >= 0)
        std::printf("| other processes' CPU use during training | %.2f cores |\n", others_cores);
      std::printf("| model flops/token (train) | %.3f MFLOP |\n", flops_token * 1e-6);
      std::printf("| model GFLOP/s achieved | %.2f |\n", model_gflops);
      if (!no_sgemm) {
        std::printf("| **achieved / ceiling** | **%.1f%%** |\n", 100 * frac);
        std::printf("| achieved / ceiling, best step | %.1f%% |\n", 100 * frac * tok_s_best / tok_s);
        std::printf("| achieved / GEMM-mix rate | %.1f%% |\n", 100 * frac_mix);
      }
      std::printf("| time split forward / backward / optimizer / zero_grads | %.1f%% / %.1f%% / %.1f%% / %.1f%% |\n",
                  100 * t_fwd / t_total, 100 * t_bwd / t_total, 100 * t_opt / t_total, 100 * t_other / t_total);
      std::printf("| per step forward / backward / optimizer | %.3f / %.3f / %.3f s |\n", t_fwd / double(steps),
                  t_bwd / double(steps), t_opt / double(steps));
      std::printf("| final loss (random tokens, ln V = %.2f) | %.3f |\n", std::log(double(vocab)), last_loss);
    }

    ds::JsonWriter j;
    j.begin_object()
        .kv("bench", "train")
        .kv("preset", preset)
        .kv("vocab", vocab)
        .kv("threads", ctx.threads)
        .kv("openblas_core", blas_core)
        .kv("batch_size", batch)
        .kv("seq_len", seq_len)
        .kv("steps", steps)
        .kv("warmup", warmup);
    if (!no_sgemm) {
      j.key("sgemm_gflops").begin_object();
      for (const Shape& s : shapes)
        j.kv(s.name + " " + std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K),
             r4(s.gflops()));
      j.end_object().kv("ceiling_gflops", r4(ceiling)).kv("gemm_mix_gflops", r4(mix_gflops));
    }
    if (!no_train) {
      j.kv("tokens_per_s", r4(tok_s))
          .kv("tokens_per_s_median_step", r4(tok_s_median))
          .kv("tokens_per_s_best_step", r4(tok_s_best))
          .kv("cpu_utilisation", r4(cpu_util))
          .kv("other_processes_cores", r4(others_cores))
          .kv("model_flops_per_token", r4(flops_token))
          .kv("active_matmul_params_per_token", p_active)
          .kv("model_gflops", r4(model_gflops));
      if (!no_sgemm) j.kv("fraction_of_ceiling", r4(frac)).kv("fraction_of_gemm_mix", r4(frac_mix));
      j.key("seconds_per_step")
          .begin_object()
          .kv("forward", r4(t_fwd / double(steps)))
          .kv("backward", r4(t_bwd / double(steps)))
          .kv("optimizer", r4(t_opt / double(steps)))
          .kv("zero_grads", r4(t_other / double(steps)))
          .kv("total", r4(t_total / double(steps)))
          .end_object();
    }
    j.end_object();
    std::printf("\n%s\n", j.str().c_str());
    return 0;
  });
}
