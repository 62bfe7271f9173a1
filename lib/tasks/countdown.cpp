// Countdown problems (TinyZero's task): numbers, a reachable target and the solution that reaches it.
#include <algorithm>

#include "tasks/generators.h"
#include "tasks/random.h"

namespace ds::tasks {

namespace {

struct CountdownShape {
  int min_count, max_count;
  int64_t max_number;
  int64_t min_target, max_target;
};

CountdownShape shape_of(Difficulty d) {
  switch (d) {
    case Difficulty::basic: return {3, 3, 20, 1, 50};
    case Difficulty::easy: return {3, 3, 100, 1, 100};
    case Difficulty::medium: return {3, 4, 100, 1, 100};
    case Difficulty::hard: return {4, 4, 100, 101, 999};
  }
  return {3, 4, 100, 1, 100};
}

// Products above this are not useful for targets below 1000 and make the searches in worked solutions dull.
constexpr int64_t kMaxIntermediate = 100000;

// Combines two subtrees with a random valid operation: positive integer result, the larger operand first for
// - and /, no division by 1. -1 when no operation is valid for the pair.
int combine(Rng& rng, Expr& e, int x, int y) {
  std::vector<char> ops = {'+', '-', '*', '/'};
  draw_shuffle(rng, ops);
  if (draw_chance(rng, 0.5)) std::swap(x, y);
  for (char op : ops) {
    int a = x, b = y;
    if ((op == '-' || op == '/') && e.at(a).value < e.at(b).value) std::swap(a, b);
    int64_t v = 0;
    if (!apply_op(op, e.at(a).value, e.at(b).value, &v)) continue;
    if (v <= 0 || v > kMaxIntermediate) continue;
    if (op == '/' && e.at(b).value == 1) continue;
    return e.binary(op, a, b);
  }
  return -1;
}

}  // namespace

std::string countdown_prompt(const std::vector<int64_t>& numbers, int64_t target) {
  std::string list;
  for (size_t i = 0; i < numbers.size(); ++i) list += (i ? ", " : "") + std::to_string(numbers[i]);
  return "Using the numbers [" + list + "], create an equation that equals " + std::to_string(target) +
         ". You can use basic arithmetic operations (+, -, *, /) and each number can only be used once.";
}

std::string countdown_key(const std::vector<int64_t>& numbers, int64_t target) {
  std::vector<int64_t> sorted = numbers;
  std::sort(sorted.begin(), sorted.end());
  std::string key = "countdown:";
  for (size_t i = 0; i < sorted.size(); ++i) key += (i ? "," : "") + std::to_string(sorted[i]);
  return key + "=" + std::to_string(target);
}

std::optional<Problem> countdown_candidate(Rng& rng, Difficulty d) {
  CountdownShape s = shape_of(d);
  int count = int(draw_range(rng, s.min_count, s.max_count));
  Problem p;
  p.task = Task::countdown;
  p.difficulty = d;
  std::vector<int> pool;
  for (int i = 0; i < count; ++i) {
    p.numbers.push_back(draw_range(rng, 1, s.max_number));
    pool.push_back(p.expr.leaf(p.numbers.back()));
  }
  // Combine in a random order: a random pair each time, so every tree shape can occur.
  while (pool.size() > 1) {
    size_t i = rng.next_below(pool.size());
    size_t j = rng.next_below(pool.size() - 1);
    if (j >= i) ++j;
    int node = combine(rng, p.expr, pool[i], pool[j]);
    if (node < 0) return std::nullopt;
    pool.erase(pool.begin() + long(std::max(i, j)));
    pool.erase(pool.begin() + long(std::min(i, j)));
    pool.push_back(node);
  }
  p.expr.root = pool[0];
  p.target = p.expr.value();
  if (p.target < s.min_target || p.target > s.max_target) return std::nullopt;
  p.prompt = countdown_prompt(p.numbers, p.target);
  p.answer = format_expr(p.expr);
  p.key = countdown_key(p.numbers, p.target);
  return p;
}

}  // namespace ds::tasks
