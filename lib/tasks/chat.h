#pragma once
// Non-reasoning chat data: greetings, thanks, questions about the assistant and short factual questions,
// answered directly without a chain of thought (R1 gives trivial queries no CoT). Built from templates and
// small word lists in chat_data.cpp; every conversation in the pool is distinct.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ds::tasks {

struct ChatPair {
  std::string category;  // "greeting", "capital", "opposite", ...
  std::string user, assistant;
};

// The whole pool, in a fixed order (a few hundred distinct pairs).
const std::vector<ChatPair>& chat_pool();

struct ChatOptions {
  uint64_t seed = 1234;
  double multi_turn_share = 0.15;  // conversations that open with a greeting exchange first
};

// Conversations in order: the pool is walked in a seeded random order, reshuffled after each pass; a share of
// them open with a greeting exchange. Record `index` is a pure function of the options and the index.
class ChatSource {
 public:
  explicit ChatSource(const ChatOptions& o) : o_(o) {}
  // {"id": "chat-000001", "messages": [...], "task": "chat", "category": ...}
  std::string record_json(uint64_t index);

 private:
  ChatOptions o_;
  uint64_t pass_ = UINT64_MAX;  // the pass whose order is cached
  std::vector<size_t> order_;
};

}  // namespace ds::tasks
