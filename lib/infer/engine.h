#pragma once
// The generation engine: continuous batching over a paged latent cache.
//   * prefill: the expanded MLA (the training forward) over the prompt, once per request (several requests per
//     forward on CUDA, right-padded); its latents fill the prompt's pages, which the request's n samples then
//     share (copy on write);
//   * decode: the absorbed MLA (infer/decoder.h), one row per running sequence, sequences of any lengths together;
//   * sampling: temperature / top-k / top-p from a Philox stream per (request seed, sample), so a sample never
//     depends on the rest of the batch; the log-prob of each sampled token under softmax(logits / T);
//   * stops: EOS, stop strings, max new tokens, the context limit;
//   * MTP speculative decoding (optional): the MTP module drafts the next-next token, the main model verifies two
//     positions at once and accepts by the speculative-sampling rule, so the output distribution is unchanged.
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "infer/decoder.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "tokenizer/tokenizer.h"

namespace ds {

struct GenRequest {
  uint64_t id = 0;
  std::vector<int32_t> prompt;
  int64_t n = 1;                   // samples (G)
  SamplingParams sp;
  std::vector<std::string> stop;  // stop strings (need a tokenizer)
  bool include_stop = false;      // keep a matched stop string at the end of the text (vLLM's
                                  // include_stop_str_in_output; R1-Zero's "</answer>" belongs to the answer)
  bool stop_at_eos = true;
};

struct GenSample {
  uint64_t request_id = 0;
  int64_t sample = 0;
  std::vector<int32_t> tokens;     // generated ids (an EOS that ended the sample included)
  std::vector<double> logprobs;    // one per token: log softmax(logits / T)[token]
  std::string text;                // decoded completion (EOS excluded; cut before a matched stop string, or after
                                   // it with include_stop)
  std::string finish_reason;       // "stop" (EOS or stop string) or "length"
  int64_t prompt_tokens = 0;
};

struct EngineOptions {
  int64_t max_batch = 32;       // running sequences
  int64_t page_size = 64;
  int64_t max_context = 0;      // 0 = the model's max_position_embeddings
  int64_t cache_tokens = 0;     // cache capacity in tokens; 0 = max_batch * max_context
  bool mtp_speculative = false;
  // CUDA: capture each plain decode step (decoder forward + GPU sampling) as a CUDA graph per (batch size,
  // block-table width) and replay it; the model runs on a dedicated stream while the engine lives. Shapes past
  // cuda_graph_max graphs, MTP speculation and steps that cannot be captured run eagerly. Off: all eager, on the
  // model's own stream (for debugging).
  bool cuda_graph = true;
  int64_t cuda_graph_max = 64;
  // Prefill several waiting prompts in one forward, right-padded to the longest, up to this many padded tokens
  // (and while padding at most doubles the work). 0 = one prompt per forward. Default (-1): 8192 on CUDA, where
  // one short prompt leaves the GPU idle between launches; 0 on the CPU, where one prompt's GEMMs already keep
  // the cores busy (and recorded CPU runs stay bit-for-bit reproducible).
  int64_t prefill_tokens = -1;
};

struct EngineStats {
  int64_t prompts = 0, prefill_tokens = 0, prefill_batches = 0, generated_tokens = 0, decode_steps = 0;
  int64_t drafted = 0, accepted = 0;  // MTP speculation
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t graph_captures = 0, graph_replays = 0, graph_failures = 0;  // CUDA graph decode steps
  size_t cache_bytes_per_token = 0;   // (kv_lora_rank + qk_rope_head_dim) x cached layers x element size
  double acceptance_rate() const { return drafted ? double(accepted) / double(drafted) : 0.0; }
};

class Engine {
 public:
  Engine(Model& model, const Tokenizer* tok, const EngineOptions& opt);
  ~Engine();
  // Queues a request. Usage error for an empty prompt or one that leaves no room in the context.
  void submit(GenRequest req);
  bool idle() const;
  // Admits waiting requests (prefill) while there is room, then runs one decode step. Returns finished samples.
  std::vector<GenSample> step();
  std::vector<GenSample> run_to_completion();
  const EngineStats& stats() const { return stats_; }
  const EngineOptions& options() const { return opt_; }
  Decoder& decoder() { return decoder_; }

 private:
  struct Seq;
  // How many requests at the front of the queue to prefill together (0: the first does not fit yet).
  size_t prefill_group() const;
  // Prefills the first k waiting requests in one forward and starts their samples.
  void admit(size_t k, std::vector<GenSample>& done);
  // One plain step for the running sequences. With CUDA graphs it runs ahead: the step is launched before the
  // previous one's tokens are read (they are fed to it on the device), and those tokens are read while it runs.
  void decode_plain(std::vector<GenSample>& done);
  struct Graph;
  struct Launched {         // a graph step on the stream whose tokens the host has not read yet
    std::vector<Seq*> rows;  // each row's sequence; nullptr once it has finished and gone
    int slot = 0;            // the host output slot its results land in
  };
  // The graph of a step's shape (created on first use, uncaptured); nullptr past cuda_graph_max or when its
  // capture failed (such steps run eagerly).
  Graph* graph_for(int64_t n, int64_t width);
  // Writes the step's inputs into the graph's host slot and queues their copy to the graph, and the ids' to the
  // feed unless they are there already (the step in flight's tokens).
  void fill_inputs(Graph& g, int slot, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                   const std::vector<int32_t>& pos, bool ids_in_feed);
  // After a step's pass: queues the copy of its results to host slot `slot` and the event that says they landed;
  // counts the running sequences' latents as written and returns the step's rows.
  Launched queue_results(int slot);
  void launch(Graph& g, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
              const std::vector<int32_t>& pos);  // replays g; then reads the step launched before, if any
  void capture(Graph& g, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
               const std::vector<int32_t>& pos);  // first step of a shape: eager, then captured; read at once
  void graph_pass(Graph& g);
  // Whether the next step can run ahead of the one in flight: the same rows in the same order, none of them
  // finished or ending by length with the token in flight.
  bool can_run_ahead() const;
  void harvest(const Launched& l);               // waits for l's results and emits them
  void settle(std::vector<GenSample>& done);     // harvests the step in flight, then retires
  void retire(std::vector<GenSample>& done);     // finishes and removes the sequences that are done
  void decode_speculative();
  struct MtpRow {
    Seq* seq;
    int64_t pos;         // position i whose MTP input is (h_i, t_{i+1})
    int32_t next_token;  // t_{i+1}
    int64_t hidden_row;  // row of h_i in the hidden tensor
  };
  // Runs the MTP module on the rows (grouped by sequence, in order) and drafts from each sequence's last row.
  void run_mtp(const std::vector<MtpRow>& rows, Tensor hidden);
  bool emit(Seq& s, int32_t token, double logprob);  // false when the sample has finished
  void finish(Seq& s, std::vector<GenSample>& done);
  // Builds the decode tensors for rows (sequence, token, position); each row sees its sequence up to itself.
  DecodeRows upload_rows(const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                         const std::vector<int32_t>& pos);
  double uniform(Seq& s);
  // One row of sample_tokens' parameters: temperature, top_p, top_k and the sequence's next uniform (drawn here).
  void sampling_params(Seq& s, double* out);
  // Sampling on the device: one row of logits and of params per sequence; only the ids and log-probs come back.
  void sample_on_device(Tensor logits, const std::vector<double>& params, std::vector<int64_t>& tokens,
                        std::vector<double>& logprobs);

  Model& model_;
  const Tokenizer* tok_;
  EngineOptions opt_;
  Decoder decoder_;
  std::unique_ptr<PagedKvCache> cache_;
  Workspace ws_;
  std::deque<GenRequest> waiting_;
  std::vector<std::unique_ptr<Seq>> running_;
  EngineStats stats_;
  bool spec_ = false;
  void* stream_ = nullptr;        // CUDA graphs on: the stream the model runs on while this engine lives
  void* saved_stream_ = nullptr;  // the model's stream before
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Graph>> graphs_;
  std::optional<Launched> inflight_;
  Workspace io_;              // CUDA graphs: the steps' outputs, log-probs f64 [max_batch] then tokens i32 [max_batch]
  Tensor out_lp_, feed_;      // the two parts of io_; feed_ is also every graph's input ids (the tokens fed back)
  size_t out_bytes_ = 0;
  void* out_host_[2] = {nullptr, nullptr};   // pinned copies of io_, by launch parity
  void* out_ready_[2] = {nullptr, nullptr};  // recorded after each copy
  int64_t launches_ = 0;
};

}  // namespace ds
