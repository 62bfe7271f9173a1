#include "tokenizer/chat_template.h"

#include "core/error.h"

namespace ds {

namespace {

class Renderer {
 public:
  explicit Renderer(const Tokenizer& tok) : tok_(tok) {}

  // A special token: one id.
  void special(std::string_view token, bool trainable) {
    const int32_t id = tok_.special_id(token);
    if (id < 0)
      throw_bad_input("the tokenizer has no " + std::string(token) +
                          " token (a chat template needs the DeepSeek special tokens; train it with ds-tokenize)",
                      tok_.source());
    out_.text += token;
    out_.ids.push_back(id);
    out_.trainable.push_back(trainable);
  }
  // Free text (may hold special-token strings, encoded as their ids like Tokenizer::encode does).
  void text(std::string_view s, bool trainable) {
    if (s.empty()) return;
    out_.text += s;
    std::vector<int32_t> ids = tok_.encode(s);
    out_.ids.insert(out_.ids.end(), ids.begin(), ids.end());
    out_.trainable.insert(out_.trainable.end(), ids.size(), uint8_t(trainable));
  }
  ChatRendering take() { return std::move(out_); }

 private:
  const Tokenizer& tok_;
  ChatRendering out_;
};

}  // namespace

int64_t ChatRendering::n_trainable() const {
  int64_t n = 0;
  for (uint8_t m : trainable) n += m != 0;
  return n;
}

bool is_chat_role(std::string_view role) { return role == "system" || role == "user" || role == "assistant"; }

std::string drop_reasoning(const std::string& content) {
  const size_t p = content.rfind(kThinkEndToken);
  return p == std::string::npos ? content : content.substr(p + kThinkEndToken.size());
}

ChatRendering render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                          const ChatRenderOptions& opt) {
  std::string system;
  bool first_system = true;
  size_t last_assistant = messages.size();  // the training target; none with a generation prompt
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (!is_chat_role(m.role))
      throw_bad_input("message " + std::to_string(i) + ": role '" + m.role +
                      "' is not system, user or assistant");
    if (m.role == "system") {
      if (!first_system) system += "\n\n";
      system += m.content;
      first_system = false;
    }
    if (m.role == "assistant" && !opt.add_generation_prompt) last_assistant = i;
  }

  Renderer r(tok);
  r.special(kBosToken, false);
  r.text(system, false);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      r.special(kUserToken, false);
      r.text(m.content, false);
    } else if (m.role == "assistant") {
      const bool target = i == last_assistant;
      const bool keep = target && opt.keep_final_reasoning;
      const bool has_reasoning = m.content.find(kThinkEndToken) != std::string::npos;
      const std::string content = keep ? m.content : drop_reasoning(m.content);
      // The target is trainable even with its reasoning dropped (keep_final_reasoning off); history only when
      // it is rendered as it was generated.
      const bool trainable = target || !has_reasoning;
      r.special(kAssistantToken, false);
      std::string_view body = content;
      if (trainable && opt.prefill_think && body.substr(0, kThinkPrefill.size()) == kThinkPrefill) {
        r.special(kThinkToken, false);
        r.text(kThinkPrefill.substr(kThinkToken.size()), false);
        body.remove_prefix(kThinkPrefill.size());
      }
      r.text(body, trainable);
      r.special(kEosToken, trainable);
    }
  }
  if (opt.add_generation_prompt) {
    r.special(kAssistantToken, false);
    if (opt.prefill_think) {
      r.special(kThinkToken, false);
      r.text(kThinkPrefill.substr(kThinkToken.size()), false);
    }
  }
  return r.take();
}

std::vector<int32_t> render_generation_prompt(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                              const ChatRenderOptions& opt) {
  ChatRenderOptions o = opt;
  o.add_generation_prompt = true;
  return render_chat(tok, messages, o).ids;
}

std::vector<ChatMessage> prompt_completion_messages(const std::string& prompt, const std::string& completion) {
  return {{"user", prompt}, {"assistant", completion}};
}

}  // namespace ds
