#pragma once
// ds-rollout's work: prompts JSONL -> G samples per prompt, streamed as JSONL as they finish.
//
// Output record (one per sample), DESIGN.md's rollout fields plus what GRPO and the reward need:
//   id "<prompt id>#<sample>", group (the prompt id), sample, prompt (the input's prompt text, when it has one),
//   completion (prefill + generated text, so rewards see the whole answer), completion_tokens (generated ids),
//   logprobs (one per generated id: log softmax(logits / T)), finish_reason ("stop" | "length"), prompt_tokens,
//   prompt_ids (the rendered prompt the samples continue, so a trainer can re-score prompt + completion exactly),
//   template, prefill, temperature, top_p, top_k, seed, and every other field of the prompt record unchanged
//   (answer, task, numbers, target, messages, ...).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/jsonl.h"
#include "infer/engine.h"
#include "tensor/context.h"

namespace ds {

enum class PromptTemplate { r1_zero, chat, raw };
PromptTemplate prompt_template_parse(const std::string& s);  // r1-zero | chat | raw; usage error otherwise
const char* prompt_template_name(PromptTemplate t);

// The R1-Zero training template (DeepSeek-R1 paper, Table 1) around a question.
std::string r1_zero_prompt(const std::string& question);

// The stop strings of a template: the user's, plus "</answer>" for r1-zero (unless no_default); r1-zero keeps the
// matched stop string in the completion, since its "</answer>" is part of the answer format (RL.md §3).
std::vector<std::string> template_stops(PromptTemplate t, const std::vector<std::string>& user, bool no_default);
bool template_keeps_stop(PromptTemplate t);

// A prompt record prepared for sampling: its id, "prompt" JSON, pass-through fields and rendered token ids.
struct PromptRecord {
  std::string id;
  std::string prompt_raw;  // the "prompt" field's JSON, or empty
  std::vector<std::pair<std::string, std::string>> passthrough;  // every other field, raw JSON
  std::vector<int32_t> ids;  // the rendered prompt, exactly as sampled from
};

// What the template appends to the prompt when answers start thinking (r1-zero: " <think>\n"; chat/raw:
// "<think>\n"), and the part of it shown at the start of a completion ("<think>\n").
std::string template_prefill(PromptTemplate t, bool prefill_think);
std::string shown_prefill(const std::string& prefill);

// Renders a prompt record ({"prompt"} or {"messages"}); the id is the record's "id" or "p<index>". Bad-input
// errors for missing or mistyped fields (without a location; callers add file:line).
PromptRecord prepare_prompt(const JsonlRecord& r, uint64_t index, const Tokenizer& tok, PromptTemplate t,
                            bool prefill_think);

// One rollout record (the fields listed at the top of this file), with `extra` fields (raw JSON) before the
// pass-through ones.
std::string rollout_record_json(const PromptRecord& p, const std::string& id, const std::string& group,
                                const GenSample& g, const SamplingParams& sp, uint64_t seed, PromptTemplate t,
                                const std::string& prefill,
                                const std::vector<std::pair<std::string, std::string>>& extra = {});

struct RolloutOptions {
  std::string ckpt;
  std::string input = "-";
  std::string output = "-";
  int64_t samples = 1;  // G
  SamplingParams sp;    // sp.seed is the run's seed; each prompt gets its own from (seed, prompt index)
  PromptTemplate tmpl = PromptTemplate::r1_zero;
  bool prefill_think = false;          // start every answer with "<think>\n" (recorded in "prefill")
  std::vector<std::string> stop;       // stop strings; r1-zero adds "</answer>" unless no_default_stop
  bool no_default_stop = false;
  bool ignore_eos = false;             // do not stop at EOS (benchmarks: samples run to max_new_tokens)
  DType dtype = DType::f32;            // model precision: f32, or bf16 mixed precision (CUDA only)
  EngineOptions engine;
  bool skip_bad = false;               // skip and report bad prompt records instead of stopping
  std::string placement;               // ds-rebalance placement JSON: report the tokens each GPU would serve
  bool progress = true;
};

struct RolloutSummary {
  int64_t prompts = 0, samples = 0, skipped = 0;
  EngineStats engine;
  std::vector<std::pair<int64_t, std::vector<int64_t>>> gpu_load;  // per MoE layer, with --placement
};

RolloutSummary run_rollout(const Context& ctx, const RolloutOptions& opt);

}  // namespace ds
