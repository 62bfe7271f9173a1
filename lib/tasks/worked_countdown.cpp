// Worked countdown: a search written out — combine two numbers, see what is left, try the operations on the
// last pair, back up on a dead end — that ends at the target (or, with a slip, at a wrong claim).
#include <algorithm>
#include <cstdlib>
#include <tuple>

#include "tasks/random.h"
#include "tasks/verify.h"
#include "tasks/worked.h"

namespace ds::tasks {

namespace {

// Larger intermediate results are pointless for targets below 1000.
constexpr int64_t kMaxIntermediate = 100000;

struct Item {
  int64_t value;
  int node;
};

struct Move {
  char op;
  int a, b;  // nodes, in the order written
  int64_t result;
};

std::string O(char op) { return std::string(1, op); }

std::string list_text(const std::vector<int64_t>& v, bool zh) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += (i + 1 == v.size()) ? (zh ? " 和 " : " and ") : (zh ? "、" : ", ");
    s += S(v[i]);
  }
  return s;
}

// The valid operations on two values: positive integer results, the larger first for - and /, no / 1.
std::vector<Move> moves_for(const Expr& e, int x, int y) {
  std::vector<Move> out;
  for (char op : {'+', '-', '*', '/'}) {
    int a = x, b = y;
    if ((op == '-' || op == '/') && e.at(a).value < e.at(b).value) std::swap(a, b);
    int64_t r = 0;
    if (!apply_op(op, e.at(a).value, e.at(b).value, &r) || r <= 0) continue;
    if (op == '/' && e.at(b).value == 1) continue;
    if (op != '+' && r > kMaxIntermediate) continue;
    out.push_back({op, a, b, r});
  }
  return out;
}

class Search {
 public:
  Search(const Problem& p, Voice& v, const WorkOptions& o, std::vector<std::string>& out)
      : p_(p), v_(v), rng_(v.rng()), o_(o), out_(&out) {
    for (int64_t n : p.numbers) start_.push_back({n, e_.leaf(n)});
    if (o.slip == Slip::corrected) slip_at_ = int(rng_.next_below(2));
  }

  // Writes the search; returns the node of the concluding expression in expr().
  int run() {
    std::vector<int64_t> nums = p_.numbers;
    bool zh_intro = v_.mixed() && draw_chance(rng_, 0.5);
    out_->push_back(zh_intro ? "我们需要用 " + list_text(nums, true) + " 凑出 " + S(p_.target) + "，每个数字只能用一次。"
                            : v_.english({{"We need to make {} from {}, using each number exactly once.",
                                           "Target: {}. Numbers: {}. Each number must be used once."}, {}},
                                         {S(p_.target), list_text(nums, false)}));
    int dead_ends = int(draw_range(rng_, 0, o_.max_dead_ends));
    bool claim = o_.slip == Slip::wrong;
    for (int i = 0; i < dead_ends + (claim ? 1 : 0); ++i) {
      if (i > 0) out_->push_back(v_.say({{"Let me try another way.", "Back up and try something else.", "Another idea:"},
                                        {"换一种方法试试。", "再试试别的组合。"}}));
      if (claim && i == dead_ends) {
        int hit = claim_near_miss();
        if (hit >= 0) return hit;
        break;
      }
      int hit = attempt(claim);
      if (hit >= 0) return hit;
    }
    if (dead_ends > 0 || claim)
      out_->push_back(v_.say({{"Let me think about which combination can land exactly on {}.", "Let me look for a different combination for {}."},
                             {"我们再想想怎样正好得到 {}。"}},
                            {S(p_.target)}));
    return solution();
  }

  const Expr& expr() const { return e_; }
  // Whether the planned slip made it into the text.
  bool slipped() const { return claimed_ || (slip_at_ >= 0 && ops_written_ > slip_at_); }

 private:
  // "a op b = r." — with the corrected slip when it is due.
  void narrate(const Move& m, const std::string& tail) {
    int64_t a = e_.at(m.a).value, b = e_.at(m.b).value;
    std::string eq = S(a) + " " + O(m.op) + " " + S(b) + " = ";
    if (ops_written_++ == slip_at_) {
      int64_t w = m.result + (draw_chance(rng_, 0.5) || m.result < 2 ? 10 : -1);
      out_->push_back(eq + S(w) + ".");
      out_->push_back(v_.say({{"Wait, {} {} {} is {}, not {}.", "Hmm, recheck: {} {} {} = {}, not {}."},
                             {"等一下，{} {} {} 等于 {}，不是 {}。"}},
                            {S(a), O(m.op), S(b), S(m.result), S(w)}));
      if (!tail.empty()) out_->push_back(tail);
      return;
    }
    out_->push_back(eq + S(m.result) + (tail.empty() ? "." : ". " + tail));
  }

  std::string leaves_text(const std::vector<Item>& items) {
    std::vector<int64_t> v;
    for (const Item& it : items) v.push_back(it.value);
    return v_.say({{"That leaves {}.", "Now I have {}."}, {"剩下 {}。"}}, {list_text(v, false)});
  }

  // Combine random pairs down to two values, then try the operations on the last pair. `avoid_hits`: a pair
  // that reaches the target is passed over (a wrong-answer document). Returns the node that reaches the
  // target, or -1.
  int attempt(bool avoid_hits) {
    std::vector<Item> items = start_;
    while (items.size() > 2) {
      size_t i = rng_.next_below(items.size()), j = rng_.next_below(items.size() - 1);
      if (j >= i) ++j;
      std::vector<Move> ms = moves_for(e_, items[i].node, items[j].node);
      const Move& m = draw_pick(rng_, ms);  // '+' is always valid
      int node = e_.binary(m.op, m.a, m.b);
      items.erase(items.begin() + long(std::max(i, j)));
      items.erase(items.begin() + long(std::min(i, j)));
      items.push_back({m.result, node});
      narrate(m, "");
      if (items.size() > 2 && draw_chance(rng_, 0.5)) out_->push_back(leaves_text(items));
    }
    std::vector<Move> ms = moves_for(e_, items[0].node, items[1].node);
    draw_shuffle(rng_, ms);
    for (const Move& m : ms) {
      if (m.result == p_.target) {
        if (avoid_hits) continue;
        narrate(m, v_.say({{"That is {}!", "That's the target!"}, {"正好是 {}！"}}, {S(p_.target)}));
        return e_.binary(m.op, m.a, m.b);
      }
      narrate(m, m.result > p_.target
                     ? v_.say({{"Not {}, too big.", "Too big.", "That overshoots {}."}, {"不是 {}，太大了。", "太大了。"}},
                              {S(p_.target)})
                     : v_.say({{"Not {}, too small.", "Too small.", "That falls short of {}."}, {"不是 {}，太小了。", "太小了。"}},
                              {S(p_.target)}));
    }
    out_->push_back(v_.say({{"None of these give {}.", "Dead end."}, {"这些都得不到 {}。"}}, {S(p_.target)}));
    return -1;
  }

  // Every way to combine all the numbers (values only): the moves as (i, j, op) on the shrinking list.
  struct Plan {
    std::vector<std::tuple<size_t, size_t, char>> moves;
    int64_t value;
  };
  static void enumerate(std::vector<int64_t>& vals, std::vector<std::tuple<size_t, size_t, char>>& path,
                        std::vector<Plan>& out) {
    if (vals.size() == 1) {
      out.push_back({path, vals[0]});
      return;
    }
    for (size_t i = 0; i < vals.size(); ++i)
      for (size_t j = i + 1; j < vals.size(); ++j) {
        Expr scratch;
        for (const Move& m : moves_for_values(scratch, vals[i], vals[j])) {
          std::vector<int64_t> next;
          for (size_t k = 0; k < vals.size(); ++k)
            if (k != i && k != j) next.push_back(vals[k]);
          next.push_back(m.result);
          path.push_back({i, j, m.op});
          enumerate(next, path, out);
          path.pop_back();
        }
      }
  }
  static std::vector<Move> moves_for_values(Expr& scratch, int64_t x, int64_t y) {
    return moves_for(scratch, scratch.leaf(x), scratch.leaf(y));
  }

  // The slip of a wrong-answer document: a combination of all the numbers that lands near the target (but not
  // on it; the closest miss when none is near), narrated as if it hit. -1 when every combination hits.
  int claim_near_miss() {
    std::vector<int64_t> vals = p_.numbers;
    std::vector<std::tuple<size_t, size_t, char>> path;
    std::vector<Plan> plans;
    enumerate(vals, path, plans);
    std::vector<const Plan*> near;
    for (int64_t tol : {std::max<int64_t>(2, p_.target / 10), std::max<int64_t>(5, p_.target / 4)}) {
      for (const Plan& pl : plans) {
        int64_t off = pl.value > p_.target ? pl.value - p_.target : p_.target - pl.value;
        if (off > 0 && off <= tol) near.push_back(&pl);
      }
      if (!near.empty()) break;
    }
    if (near.empty()) {  // nothing close: the closest miss
      for (const Plan& pl : plans)
        if (pl.value != p_.target &&
            (near.empty() || std::llabs(pl.value - p_.target) < std::llabs(near[0]->value - p_.target)))
          near.assign(1, &pl);
    }
    if (near.empty()) return -1;
    const Plan& pl = *draw_pick(rng_, near);
    std::vector<Item> items = start_;
    int node = -1;
    for (size_t k = 0; k < pl.moves.size(); ++k) {
      auto [i, j, op] = pl.moves[k];
      int a = items[i].node, b = items[j].node;
      if ((op == '-' || op == '/') && e_.at(a).value < e_.at(b).value) std::swap(a, b);
      else if ((op == '+' || op == '*') && draw_chance(rng_, 0.5)) std::swap(a, b);
      node = e_.binary(op, a, b);
      Move m{op, a, b, e_.at(node).value};
      items.erase(items.begin() + long(j));
      items.erase(items.begin() + long(i));
      items.push_back({m.result, node});
      if (k + 1 < pl.moves.size()) {
        narrate(m, "");
      } else {
        out_->push_back(S(e_.at(a).value) + " " + O(op) + " " + S(e_.at(b).value) + " = " + S(p_.target) + ". " +
                        v_.say({{"That's the target!", "Got it!"}, {"正好得到 {}！"}}, {S(p_.target)}));
      }
    }
    claimed_ = true;
    return node;
  }

  // The generator's own solution, step by step.
  int solution() {
    std::map<int, int> copy;  // problem node -> node here
    std::vector<Step> steps = expr_steps(p_.expr);
    int node = -1;
    for (size_t k = 0; k < steps.size(); ++k) {
      const Expr::Node& n = p_.expr.at(steps[k].node);
      auto here = [&](int pn) {
        if (auto it = copy.find(pn); it != copy.end()) return it->second;
        return copy[pn] = e_.leaf(p_.expr.at(pn).value);
      };
      Move m{n.op, here(n.left), here(n.right), steps[k].result};
      node = e_.binary(m.op, m.a, m.b);
      copy[steps[k].node] = node;
      bool last = k + 1 == steps.size();
      narrate(m, last ? v_.say({{"That is {}!", "That's the target!"}, {"正好是 {}！"}}, {S(p_.target)}) : "");
    }
    return node;
  }

  const Problem& p_;
  Voice& v_;
  Rng& rng_;
  const WorkOptions& o_;
  std::vector<std::string>* out_;  // where lines go (swapped for silent trials)
  Expr e_;
  std::vector<Item> start_;
  int ops_written_ = 0;
  int slip_at_ = -1;
  bool claimed_ = false;
};

}  // namespace

Worked work_countdown(const Problem& p, Voice& v, const WorkOptions& o) {
  Worked w;
  Search s(p, v, o, w.lines);
  int node = s.run();
  w.answer = format_expr(s.expr(), node);
  w.correct = countdown_check(w.answer, p.numbers, p.target);
  w.slipped = s.slipped();
  std::vector<int64_t> sorted = p.numbers;
  std::sort(sorted.begin(), sorted.end());
  if (o.verify && w.correct) {
    Expr found = s.expr();
    found.root = node;
    w.lines.push_back(v.say({{"Let me verify {}:", "Check {} step by step:"}, {"验证一下 {}："}}, {w.answer}));
    for (const Step& st : expr_steps(found))
      w.lines.push_back(S(st.lhs) + " " + O(st.op) + " " + S(st.rhs) + " = " + S(st.result) + ".");
    w.lines.push_back(v.say({{"It equals {}, and it uses {}, each given number exactly once."},
                             {"结果是 {}，用到了 {}，每个数字都只用了一次。"}},
                            {S(p.target), list_text(sorted, false)}));
  }
  w.lines.push_back(v.say({{"So the equation is {}.", "The answer is {}."}, {"所以答案是 {}。"}}, {w.answer}));
  w.summary = w.answer + " = " + S(p.target) + ", using each of the numbers " + list_text(sorted, false) +
              " exactly once.";
  return w;
}

}  // namespace ds::tasks
