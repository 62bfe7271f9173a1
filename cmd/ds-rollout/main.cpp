// ds-rollout: prompts JSONL -> G samples per prompt with token ids and behaviour log-probs, streamed as JSONL.
#include <limits>

#include "cmd/common/program.h"
#include "core/log.h"
#include "infer/rollout.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-rollout", [&] {
    CLI::App app{"Sample G completions per prompt from a checkpoint (latent-cache engine, optional MTP speculation)."};
    app.set_help_flag("-h,--help", "Print this help and exit");
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptDevice | ds::kOptThreads | ds::kOptSeed);
    ds::RolloutOptions o;
    std::string tmpl = "r1-zero", precision = "f32";
    app.add_option("--ckpt", o.ckpt, "Checkpoint directory (weights + tokenizer)")->required();
    app.add_option("-i,--input", o.input, "Prompts JSONL ({\"prompt\"} or {\"messages\"}; .zst ok; - = stdin)")
        ->capture_default_str();
    app.add_option("-o,--output", o.output, "Rollouts JSONL (- = stdout; .zst ok)")->capture_default_str();
    app.add_option("-n,--samples", o.samples, "Samples per prompt (G)")->capture_default_str();
    app.add_option("--temperature", o.sp.temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
    app.add_option("--top-p", o.sp.top_p, "Nucleus sampling mass")->capture_default_str();
    app.add_option("--top-k", o.sp.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str();
    app.add_option("--max-new-tokens", o.sp.max_new_tokens, "Tokens generated per sample at most")
        ->capture_default_str();
    app.add_option("--template", tmpl, "Prompt template: r1-zero (the paper's), chat (DeepSeek-R1 chat) or raw")
        ->capture_default_str();
    app.add_flag("--prefill-think", o.prefill_think, "Start every answer with \"<think>\\n\" (kept in the completion)");
    app.add_option("--stop", o.stop, "Stop string (repeatable); r1-zero also stops at </answer>");
    app.add_flag("--no-default-stop", o.no_default_stop, "Do not add r1-zero's </answer> stop string");
    app.add_flag("--ignore-eos", o.ignore_eos,
                 "Do not stop at the EOS token: samples run to --max-new-tokens (unless a stop string or the "
                 "context ends them); for benchmarks");
    app.add_option("--precision", precision,
                   "f32, or bf16: mixed precision on --device cuda (bf16 weights, activations and latent cache; "
                   "f32 logits)")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    app.add_option("--max-batch", o.engine.max_batch, "Sequences decoded together")->capture_default_str();
    app.add_option("--max-context", o.engine.max_context, "Context limit in tokens (0 = the model's)")
        ->capture_default_str();
    app.add_option("--page-size", o.engine.page_size, "Tokens per KV-cache page")->capture_default_str();
    app.add_option("--prefill-tokens", o.engine.prefill_tokens,
                   "Prompts prefilled together in one forward, right-padded, up to this many padded tokens (0 = one "
                   "prompt per forward; -1 = 8192 on --device cuda, 0 on the CPU)")
        ->check(CLI::Range(int64_t(-1), std::numeric_limits<int64_t>::max()))
        ->capture_default_str();
    app.add_flag("--mtp-speculative", o.engine.mtp_speculative,
                 "Draft the next-next token with the MTP module and verify it (same output distribution)");
    bool no_graph = false;
    app.add_flag("--no-cuda-graph", no_graph,
                 "Decode eagerly on --device cuda (default: each step's forward + sampling replayed as a CUDA graph "
                 "per batch shape)");
    app.add_flag("--skip-bad", o.skip_bad, "Skip and report bad prompt records instead of stopping at the first");
    app.add_option("--placement", o.placement,
                   "ds-rebalance placement JSON: also report the tokens each GPU would serve (outputs unchanged)");
    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::Context ctx = ds::apply_common_options(common);
    o.engine.cuda_graph = !no_graph;
    o.tmpl = ds::prompt_template_parse(tmpl);
    o.sp.seed = common.seed;
    o.dtype = precision == "bf16" ? ds::DType::bf16 : ds::DType::f32;
    if (o.sp.temperature < 0 || o.sp.top_p <= 0 || o.sp.top_p > 1 || o.sp.top_k < 0 || o.sp.max_new_tokens < 1)
      ds::throw_usage("need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --max-new-tokens >= 1");
    ds::RolloutSummary s = ds::run_rollout(ctx, o);
    const ds::EngineStats& e = s.engine;
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "%lld prompts, %lld samples, %lld tokens in %.3f s (prefill %.3f s, decode %.3f s; %.0f tok/s "
                  "decode), KV cache %zu B/token%s",
                  static_cast<long long>(s.prompts), static_cast<long long>(s.samples),
                  static_cast<long long>(e.generated_tokens), e.prefill_seconds + e.decode_seconds, e.prefill_seconds,
                  e.decode_seconds, e.decode_seconds > 0 ? double(e.generated_tokens) / e.decode_seconds : 0.0,
                  e.cache_bytes_per_token,
                  o.engine.mtp_speculative
                      ? (", MTP acceptance " + std::to_string(e.acceptance_rate()).substr(0, 5)).c_str()
                      : "");
    ds::log_info(buf);
    if (e.graph_captures + e.graph_failures > 0)
      ds::log_info("CUDA graph decode: " + std::to_string(e.graph_captures) + " shapes captured, " +
                   std::to_string(e.graph_replays) + " steps replayed of " + std::to_string(e.decode_steps) +
                   (e.graph_failures ? ", " + std::to_string(e.graph_failures) + " shapes not capturable (eager)" : ""));
    if (s.skipped) ds::log_warn(std::to_string(s.skipped) + " bad prompt records skipped");
    for (const auto& [layer, gpu] : s.gpu_load) {  // max/mean tokens per GPU under the placement
      int64_t total = 0, mx = 0;
      for (int64_t t : gpu) total += t, mx = std::max(mx, t);
      if (total == 0) continue;  // e.g. the MTP block without --mtp-speculative
      std::snprintf(buf, sizeof buf, "layer %lld: tokens per GPU max/mean %.3f (max %lld over %zu GPUs)",
                    static_cast<long long>(layer), total ? double(mx) * double(gpu.size()) / double(total) : 0.0,
                    static_cast<long long>(mx), gpu.size());
      ds::log_info(buf);
    }
    return 0;
  });
}
