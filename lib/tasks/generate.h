#pragma once
// The ds-tasks subcommands as library calls: each writes N JSONL records to a path ('-' = stdout, .zst
// compressed), atomically (a failure leaves no output file), and returns the number written.
#include <cstdint>
#include <string>

#include "tasks/chat.h"
#include "tasks/corpus.h"
#include "tasks/task.h"

namespace ds::tasks {

struct PromptsOptions {
  uint64_t seed = 1234;
  TaskChoice task = TaskChoice::mixed;
  Split split = Split::train;
  DifficultyChoice difficulty = DifficultyChoice::medium;
};

// Distinct problems of one split; problem i carries the id "<task>-<split>-<i, 6 digits>".
int64_t write_prompts(const PromptsOptions& o, int64_t n, const std::string& output);
int64_t write_corpus(const CorpusOptions& o, int64_t n, const std::string& output);
int64_t write_coldstart(const ColdstartOptions& o, int64_t n, const std::string& output);
int64_t write_chat(const ChatOptions& o, int64_t n, const std::string& output);

// What --list prints: the tasks, difficulties and the fields of every record kind.
std::string tasks_list_text();

}  // namespace ds::tasks
