// ds-tokenize: train the SentencePiece tokenizer (with the DeepSeek chat special tokens), and encode or decode
// JSONL streams with it for inspection. See man/ds-tokenize.1.
#include <string>

#include "cmd/common/program.h"
#include "core/log.h"
#include "tokenizer/tokenize_stream.h"
#include "tokenizer/tokenizer_train.h"

int main(int argc, char** argv) {
  return ds::run_program("ds-tokenize", [&] {
    CLI::App app{"Train a SentencePiece BPE tokenizer with the DeepSeek-V3/R1 special tokens; encode and decode "
                 "JSONL with it."};
    app.require_subcommand(1, 1);
    app.fallthrough();  // common options (--threads, --log-level) may follow the subcommand
    ds::CommonOptions common;
    ds::add_common_options(app, common, ds::kOptThreads);

    ds::TrainOptions train;
    CLI::App* t = app.add_subcommand("train", "Train a tokenizer on a {\"text\"} JSONL corpus");
    t->add_option("-i,--input", train.input, "Corpus: {\"text\"} JSONL (.jsonl.zst too), '-' for stdin")->required();
    t->add_option("-o,--output", train.output,
                  "Output directory (tokenizer.model, tokenizer_config.json, special_tokens_map.json), or a file "
                  "name ending in .model for the model alone")
        ->required();
    t->add_option("--vocab-size", train.vocab_size, "Vocabulary size (an upper bound on a small corpus)")
        ->check(CLI::Range(ds::kMinVocabSize, 1 << 22))
        ->capture_default_str();
    t->add_option("--model-max-length", train.model_max_length, "model_max_length in tokenizer_config.json")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();

    std::string tokenizer_path;
    ds::EncodeStreamOptions enc;
    CLI::App* e = app.add_subcommand("encode", "Encode {\"text\"} JSONL (or text lines) to {\"ids\"} JSONL");
    e->add_option("--tokenizer", tokenizer_path, "tokenizer.model, or a directory holding one")->required();
    e->add_option("-i,--input", enc.input, "Input: JSONL with \"text\", or text with --text-lines; '-' = stdin")
        ->capture_default_str();
    e->add_option("-o,--output", enc.output, "Output JSONL; '-' = stdout")->capture_default_str();
    e->add_flag("--text-lines", enc.text_lines, "Read plain text, one example per line");
    e->add_flag("--pieces", enc.pieces, "Also write the pieces (\"pieces\": [...])");
    e->add_flag("--add-bos", enc.add_bos, "Prepend the begin-of-sentence token");
    e->add_flag("--add-eos", enc.add_eos, "Append the end-of-sentence token");

    ds::DecodeStreamOptions dec;
    CLI::App* d = app.add_subcommand("decode", "Decode {\"ids\"} JSONL to {\"text\"} JSONL");
    d->add_option("--tokenizer", tokenizer_path, "tokenizer.model, or a directory holding one")->required();
    d->add_option("-i,--input", dec.input, "Input JSONL with \"ids\"; '-' = stdin")->capture_default_str();
    d->add_option("-o,--output", dec.output, "Output JSONL; '-' = stdout")->capture_default_str();
    d->add_flag("--skip-special", dec.skip_special, "Leave the special tokens out of the text");

    if (int rc = ds::parse_cli(app, argc, argv); rc >= 0) return rc;
    ds::apply_common_options(common);

    if (*t) {
      train.threads = common.threads;
      ds::train_tokenizer(train);
      ds::log_info("wrote " + train.output);
    } else if (*e) {
      int64_t n = ds::encode_stream(ds::Tokenizer::load(tokenizer_path), enc);
      ds::log_debug("encoded " + std::to_string(n) + " records");
    } else {
      int64_t n = ds::decode_stream(ds::Tokenizer::load(tokenizer_path), dec);
      ds::log_debug("decoded " + std::to_string(n) + " records");
    }
    return 0;
  });
}
