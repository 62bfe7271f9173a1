// libFuzzer target for the reward rules: extraction, normalisation + equivalence, the format check,
// the language count, the countdown verifier and the expression evaluator, on arbitrary bytes.
// Besides "no crash, no sanitizer report", it checks invariants:
//   - equivalence is reflexive and symmetric, and equal answer keys imply equal answers;
//   - a completion that passes the think_answer format yields an answer through the answer_tag rule;
//   - target words never exceed all words; shares and ratios stay in [0, 1];
//   - a correct countdown equation uses exactly the given numbers.
// Build and run: see fuzz/README.md.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "rl/answer.h"
#include "rl/countdown.h"
#include "rl/expr.h"
#include "rl/extract.h"
#include "rl/format.h"
#include "rl/language.h"
#include "rl/penalty.h"
#include "rl/reject.h"
#include "rl/reward.h"

using namespace ds::rl;

namespace {

void require(bool ok, const char* what, std::string_view a, std::string_view b = {}) {
  if (ok) return;
  std::fprintf(stderr, "invariant failed: %s\n  a=[%.*s]\n  b=[%.*s]\n", what, int(std::min<size_t>(a.size(), 400)),
               a.data(), int(std::min<size_t>(b.size(), 400)), b.data());
  std::abort();
}

void check_pair(std::string_view x, std::string_view y) {
  auto px = parse_answer(x), py = parse_answer(y);
  if (px) require(answers_equal(*px, *px), "reflexive", x);
  if (px && py) {
    bool xy = answers_equal(*px, *py), yx = answers_equal(*py, *px);
    require(xy == yx, "symmetric", x, y);
    if (answer_key(*px) == answer_key(*py)) require(xy, "equal keys imply equal answers", x, y);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  // Layout of an input: COMPLETION \x00 GOLD \x00 NUMBERS-BYTES (each later part optional).
  size_t z1 = all.find('\0');
  std::string_view completion = all.substr(0, z1);
  std::string_view gold = z1 == std::string_view::npos ? std::string_view() : all.substr(z1 + 1);
  size_t z2 = gold.find('\0');
  std::string_view numbytes = z2 == std::string_view::npos ? std::string_view() : gold.substr(z2 + 1);
  gold = gold.substr(0, z2);

  Layout L = analyse(completion);
  Extracted ex = extract_answer(completion, L);
  FormatResult f = check_format(completion, L, FormatStyle::think_answer);
  if (f.ok) {
    require(ex.rule == AnswerRule::answer_tag && ex.answer.has_value(), "format ok implies an answer block",
            completion);
  }
  (void)check_format(completion, L, FormatStyle::think);
  (void)last_boxed(completion);

  LanguageSpec spec;
  parse_language((size & 1) ? "zh" : "en", &spec);
  WordCounts wc = count_words(completion, spec);
  require(wc.target <= wc.words && wc.target >= 0, "target words <= words", completion);
  double share = language_share(wc);
  require(share >= 0.0 && share <= 1.0, "share in [0, 1]", completion);
  if (completion.size() < 8192) {
    double rr = repetition_ratio(completion, 1 + int(size % 4));
    require(rr >= 0.0 && rr <= 1.0, "repetition ratio in [0, 1]", completion);
  }
  (void)longest_line(completion);

  std::string_view pred = ex.answer ? std::string_view(*ex.answer) : completion.substr(0, 200);
  check_pair(gold, pred);
  check_pair(pred, completion.substr(0, 64));
  (void)normalize_answer(gold);

  for (ExprDialect d : {ExprDialect::math, ExprDialect::countdown}) {
    ExprOptions o;
    o.dialect = d;
    o.thousands = (size & 2) != 0;
    ExprResult r = eval_expr(gold, o);
    require(r.value.has_value() == (r.error == ExprError::none), "value xor error", gold);
  }

  std::vector<int64_t> numbers;
  for (size_t i = 0; i < numbytes.size() && i < 6; ++i) numbers.push_back(static_cast<unsigned char>(numbytes[i]) % 101);
  Rational target = Rational::of(int64_t(size % 200));
  CountdownResult cr = verify_countdown(pred, numbers, target);
  if (cr.status == CountdownStatus::correct) {
    ExprOptions o;
    o.dialect = ExprDialect::countdown;
    std::string_view lhs = trim(pred.substr(0, pred.find('=')));
    ExprResult r = eval_expr(lhs, o);
    std::vector<int64_t> a = r.literals, b = numbers;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    require(a == b, "correct countdown uses the numbers", pred);
  }

  RolloutInput in;
  in.completion = completion;
  in.gold = gold;
  in.length = int64_t(size);
  RewardConfig cfg;
  cfg.language_weight = 0.5;
  cfg.repetition_penalty = completion.size() < 8192 ? -1.0 : 0.0;
  RewardResult rr = score_rollout(in, cfg);
  if (rr.total) require(*rr.total >= -1.0 && *rr.total <= 2.5, "total in range", completion);
  return 0;
}
