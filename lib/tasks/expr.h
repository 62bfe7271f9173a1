#pragma once
// Integer expression trees for the task generators: countdown solutions and arithmetic problems.
// Every node holds its exact value; a binary node is only built when its operation is exact (no overflow,
// division only without remainder), so a tree is always a valid integer computation.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ds::tasks {

struct Expr {
  struct Node {
    char op = 0;  // 0 = a number leaf; otherwise '+', '-', '*' or '/'
    int64_t value = 0;
    int left = -1, right = -1;
  };
  std::vector<Node> nodes;
  int root = -1;

  int leaf(int64_t v);
  // Builds (l op r); an internal check fails when the operation is not exact (see apply_op).
  int binary(char op, int l, int r);
  const Node& at(int i) const { return nodes[size_t(i)]; }
  int64_t value() const { return at(root).value; }
};

// a op b into *out when exact: no int64 overflow, no division by zero, no remainder. False otherwise.
bool apply_op(char op, int64_t a, int64_t b, int64_t* out);

// The expression as text, "55 + 36 - (19 - 7)". Parentheses follow the tree: a child is parenthesised when
// its operator binds less tightly than its parent's, and a right child also when it binds equally, so reading
// the text with the usual precedence and left-to-right order performs exactly the tree's operations.
std::string format_expr(const Expr& e, int node = -1);

// One operation of the tree, in evaluation order (post-order, left subtree first).
struct Step {
  int node = -1;
  char op = 0;
  int64_t lhs = 0, rhs = 0, result = 0;
};
// The steps of evaluating the tree. `overrides` replaces the result of the given nodes (a deliberate slip in a
// worked solution); later steps then use the replaced values. A later step whose operation is no longer exact
// (a division that leaves a remainder) keeps the truncated quotient.
std::vector<Step> expr_steps(const Expr& e, const std::map<int, int64_t>& overrides = {});

// Number leaves in left-to-right order.
std::vector<int64_t> expr_leaves(const Expr& e);

}  // namespace ds::tasks
