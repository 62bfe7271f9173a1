#include "tasks/expr.h"

#include "core/error.h"

namespace ds::tasks {

bool apply_op(char op, int64_t a, int64_t b, int64_t* out) {
  switch (op) {
    case '+': return !__builtin_add_overflow(a, b, out);
    case '-': return !__builtin_sub_overflow(a, b, out);
    case '*': return !__builtin_mul_overflow(a, b, out);
    case '/':
      if (b == 0 || (a == INT64_MIN && b == -1) || a % b != 0) return false;
      *out = a / b;
      return true;
    default: return false;
  }
}

int Expr::leaf(int64_t v) {
  nodes.push_back({0, v, -1, -1});
  return int(nodes.size()) - 1;
}

int Expr::binary(char op, int l, int r) {
  int64_t v = 0;
  DS_CHECK(apply_op(op, at(l).value, at(r).value, &v),
           std::to_string(at(l).value) + " " + op + " " + std::to_string(at(r).value) + " is not exact");
  nodes.push_back({op, v, l, r});
  return int(nodes.size()) - 1;
}

namespace {

int precedence(char op) { return (op == '+' || op == '-') ? 1 : 2; }

void format_into(const Expr& e, int i, std::string& out) {
  const Expr::Node& n = e.at(i);
  if (n.op == 0) {
    out += std::to_string(n.value);
    return;
  }
  auto child = [&](int c, bool right) {
    const Expr::Node& cn = e.at(c);
    bool paren = cn.op != 0 && (precedence(cn.op) < precedence(n.op) ||
                                (right && precedence(cn.op) == precedence(n.op)));
    if (paren) out += '(';
    format_into(e, c, out);
    if (paren) out += ')';
  };
  child(n.left, false);
  out += ' ';
  out += n.op;
  out += ' ';
  child(n.right, true);
}

int64_t steps_into(const Expr& e, int i, const std::map<int, int64_t>& overrides, std::vector<Step>& out) {
  const Expr::Node& n = e.at(i);
  if (n.op == 0) return n.value;
  int64_t a = steps_into(e, n.left, overrides, out);
  int64_t b = steps_into(e, n.right, overrides, out);
  int64_t v = 0;
  if (!apply_op(n.op, a, b, &v)) v = (n.op == '/' && b != 0) ? a / b : n.value;
  if (auto it = overrides.find(i); it != overrides.end()) v = it->second;
  out.push_back({i, n.op, a, b, v});
  return v;
}

void leaves_into(const Expr& e, int i, std::vector<int64_t>& out) {
  const Expr::Node& n = e.at(i);
  if (n.op == 0) {
    out.push_back(n.value);
    return;
  }
  leaves_into(e, n.left, out);
  leaves_into(e, n.right, out);
}

}  // namespace

std::string format_expr(const Expr& e, int node) {
  std::string out;
  format_into(e, node < 0 ? e.root : node, out);
  return out;
}

std::vector<Step> expr_steps(const Expr& e, const std::map<int, int64_t>& overrides) {
  std::vector<Step> out;
  steps_into(e, e.root, overrides, out);
  return out;
}

std::vector<int64_t> expr_leaves(const Expr& e) {
  std::vector<int64_t> out;
  leaves_into(e, e.root, out);
  return out;
}

}  // namespace ds::tasks
