#include "tasks/chat.h"

#include <cstdio>

#include "core/json.h"
#include "tasks/problems.h"
#include "tasks/random.h"

namespace ds::tasks {

namespace {

constexpr uint64_t kTagChatOrder = 401, kTagChatTurns = 402;

}  // namespace

std::string ChatSource::record_json(uint64_t index) {
  const std::vector<ChatPair>& pool = chat_pool();
  if (uint64_t pass = index / pool.size(); pass != pass_) {  // a seeded permutation per pass
    order_.resize(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) order_[i] = i;
    Rng r{o_.seed, stream_of({uint64_t(Purpose::chat), kTagChatOrder, pass}), 0};
    draw_shuffle(r, order_);
    pass_ = pass;
  }
  const ChatPair& main = pool[order_[size_t(index % pool.size())]];
  const ChatOptions& o = o_;
  Rng r{o.seed, stream_of({uint64_t(Purpose::chat), kTagChatTurns, index}), 0};
  std::vector<const ChatPair*> turns;
  if (main.category != "greeting" && draw_chance(r, o.multi_turn_share)) {
    std::vector<const ChatPair*> greetings;
    for (const ChatPair& c : pool)
      if (c.category == "greeting") greetings.push_back(&c);
    turns.push_back(draw_pick(r, greetings));
  }
  turns.push_back(&main);
  char id[32];
  std::snprintf(id, sizeof id, "chat-%06llu", static_cast<unsigned long long>(index));
  JsonWriter w;
  w.begin_object();
  w.kv("id", id);
  w.key("messages").begin_array();
  for (const ChatPair* t : turns) {
    w.begin_object().kv("role", "user").kv("content", t->user).end_object();
    w.begin_object().kv("role", "assistant").kv("content", t->assistant).end_object();
  }
  w.end_array();
  w.kv("task", "chat");
  w.kv("category", main.category);
  w.end_object();
  return w.take();
}

}  // namespace ds::tasks
