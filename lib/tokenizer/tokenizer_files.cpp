#include "tokenizer/tokenizer_files.h"

#include <filesystem>
#include <map>

#include "core/io.h"
#include "core/json.h"

namespace ds {

const std::string& deepseek_r1_chat_template() {
  // Every tag trims the whitespace around it, so the layout below does not reach the output.
  static const std::string t = R"JINJA({%- set ns = namespace(system_prompt='', first_system=true) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
    {%- if ns.first_system -%}
      {%- set ns.system_prompt = message['content'] -%}
      {%- set ns.first_system = false -%}
    {%- else -%}
      {%- set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] -%}
    {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{{- bos_token + ns.system_prompt -}}
{%- for message in messages -%}
  {%- if message['role'] == 'user' -%}
    {{- '<｜User｜>' + message['content'] -}}
  {%- elif message['role'] == 'assistant' -%}
    {%- set content = message['content'] -%}
    {%- if '</think>' in content -%}
      {%- set content = content.split('</think>')[-1] -%}
    {%- endif -%}
    {{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt is defined and add_generation_prompt -%}
  {{- '<｜Assistant｜><think>\n' -}}
{%- endif -%})JINJA";
  return t;
}

namespace {

std::string tokenizer_config_json(const Tokenizer& tok, int64_t model_max_length) {
  // Keys in sorted order, as transformers' save_pretrained writes them.
  JsonWriter w(true);
  w.begin_object();
  w.kv("add_bos_token", true);
  w.kv("add_eos_token", false);
  w.kv("add_prefix_space", false);  // the model has no dummy prefix; keep converters from adding one
  std::map<std::string, std::string_view> by_id;  // JSON object keys are strings, sorted as strings
  for (auto t : special_tokens())
    if (tok.special_id(t) >= 0) by_id[std::to_string(tok.special_id(t))] = t;
  w.key("added_tokens_decoder").begin_object();
  for (const auto& [id, t] : by_id) {
    w.key(id).begin_object();
    w.kv("content", t).kv("lstrip", false).kv("normalized", false).kv("rstrip", false);
    w.kv("single_word", false).kv("special", true);
    w.end_object();
  }
  w.end_object();
  w.key("additional_special_tokens").begin_array();
  for (auto t : chat_tokens())
    if (tok.special_id(t) >= 0) w.value(t);
  w.end_array();
  w.kv("bos_token", kBosToken);
  w.kv("chat_template", deepseek_r1_chat_template());
  w.kv("chat_template_name", kChatTemplateName);
  w.kv("clean_up_tokenization_spaces", false);
  w.kv("eos_token", kEosToken);
  w.kv("legacy", true);  // transformers' LlamaTokenizer then calls SentencePiece as is
  w.kv("model_max_length", model_max_length);
  w.kv("pad_token", kPadToken);
  w.key("sp_model_kwargs").begin_object().end_object();
  w.kv("tokenizer_class", "LlamaTokenizer");
  w.kv("unk_token", kUnkToken);
  w.end_object();
  return w.take() + "\n";
}

std::string special_tokens_map_json() {
  JsonWriter w(true);
  w.begin_object();
  w.key("additional_special_tokens").begin_array();
  for (auto t : chat_tokens()) w.value(t);
  w.end_array();
  w.kv("bos_token", kBosToken);
  w.kv("eos_token", kEosToken);
  w.kv("pad_token", kPadToken);
  w.kv("unk_token", kUnkToken);
  w.end_object();
  return w.take() + "\n";
}

}  // namespace

void write_tokenizer_files(const std::string& dir, const Tokenizer& tok, int64_t model_max_length) {
  const std::filesystem::path d(dir);
  write_file_atomic((d / "tokenizer.model").string(), tok.serialized_model());
  write_file_atomic((d / "tokenizer_config.json").string(), tokenizer_config_json(tok, model_max_length));
  write_file_atomic((d / "special_tokens_map.json").string(), special_tokens_map_json());
}

}  // namespace ds
