#pragma once
// A model as a Hugging Face checkpoint directory: config.json, model.safetensors (or shards + index) with HF
// tensor names, generation_config.json. Tokenizer files and training state are added by their owners
// (lib/tokenizer, lib/train) into the same directory before it is committed.
#include <memory>
#include <string>

#include "model/model.h"

namespace ds {

struct ModelLoadOptions {
  DType dtype = DType::f32;
  // A checkpoint whose config asks for MTP modules but holds no MTP weights (e.g. written by transformers,
  // which has no MTP): load it with MTP disabled and a warning, instead of an error.
  bool allow_missing_mtp = true;
};

// Loads config.json + weights from `dir`. Every tensor is checked by name and shape (bad-input errors name it).
std::unique_ptr<Model> load_model(const std::string& dir, const Context& ctx, const ModelLoadOptions& opt = {});
// Reads every weight of `model` from the checkpoint at `dir` (same checks).
void load_weights(Model& model, const std::string& dir);

struct ModelSaveOptions {
  DType file_dtype = DType::f32;     // f32 or bf16
  size_t max_shard_bytes = size_t(5) << 30;  // HF's default 5 GB shards
};
// Writes config.json, model.safetensors (+ index when sharded) and generation_config.json into `dir`
// (normally CheckpointDirWriter::tmp_dir()).
void save_model_files(const std::string& dir, Model& model, const ModelSaveOptions& opt = {});

}  // namespace ds
