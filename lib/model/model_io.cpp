#include "model/model_io.h"

#include "ckpt/ckpt_dir.h"
#include "ckpt/safetensors.h"
#include "core/io.h"
#include "core/json.h"
#include "core/log.h"

namespace ds {

void load_weights(Model& model, const std::string& dir) {
  SafetensorsReader r = SafetensorsReader::open(dir);
  // The MTP copies of embed_tokens / shared_head.head are not read: the model shares one embedding and head.
  for (auto& [name, t] : checkpoint_tensors(model.config(), model.weights(), /*with_mtp_copies=*/false))
    r.read_into(name, t);
  model.sync_compute_weights();
}

std::unique_ptr<Model> load_model(const std::string& dir, const Context& ctx, const ModelLoadOptions& opt) {
  if (!is_directory(dir)) throw_bad_input("checkpoint directory not found", dir);
  ModelConfig cfg = config_load(dir);
  if (cfg.num_nextn_predict_layers > 0 && opt.allow_missing_mtp) {
    SafetensorsReader r = SafetensorsReader::open(dir);
    const std::string probe = "model.layers." + std::to_string(cfg.num_hidden_layers) + ".eh_proj.weight";
    if (!r.has(probe)) {
      log_warn("checkpoint " + dir + " has no MTP weights (" + probe + "): MTP disabled");
      cfg.num_nextn_predict_layers = 0;
    }
  }
  auto model = std::make_unique<Model>(cfg, ctx, opt.dtype);
  load_weights(*model, dir);
  return model;
}

void save_model_files(const std::string& dir, Model& model, const ModelSaveOptions& opt) {
  const ModelConfig& cfg = model.config();
  write_text_file(dir, "config.json", config_to_json(cfg));
  JsonWriter g(true);
  g.begin_object().kv("bos_token_id", cfg.bos_token_id).kv("eos_token_id", cfg.eos_token_id);
  g.kv("do_sample", true).kv("temperature", 0.6).kv("top_p", 0.95).end_object();
  write_text_file(dir, "generation_config.json", g.str() + "\n");
  // Router biases stay f32 in bf16 checkpoints too, as DeepSeek keeps them.
  NamedTensors all = checkpoint_tensors(cfg, model.weights(), /*with_mtp_copies=*/true);
  write_safetensors(dir, all, opt.file_dtype, opt.max_shard_bytes, {{"format", "pt"}});
}

}  // namespace ds
