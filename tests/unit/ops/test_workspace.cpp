// Workspace (lib/tensor/workspace.h): zero-filled views by default; with zero fill off, views keep what the last
// pass left, or all-ones bytes (NaN) under DS_WORKSPACE_POISON, which `make test` sets.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

#include "tensor/arena.h"
#include "tensor/workspace.h"

using namespace ds;

namespace {
bool poisoned() {
  const char* v = std::getenv("DS_WORKSPACE_POISON");
  return v && *v && std::string(v) != "0";
}
bool all_bytes(const Tensor& t, unsigned char b) {
  const auto* p = static_cast<const unsigned char*>(t.data);
  for (size_t i = 0; i < t.nbytes(); ++i)
    if (p[i] != b) return false;
  return true;
}
}  // namespace

TEST_CASE("workspace: zero-filled views by default, also after a pass wrote them", "[workspace]") {
  Workspace ws;
  for (int pass = 0; pass < 3; ++pass) {
    Tensor a = ws.alloc("a", DType::f32, {100}), b = ws.alloc("b", DType::bf16, {7, 9});
    CHECK(all_bytes(a, 0));
    CHECK(all_bytes(b, 0));
    std::memset(a.data, 0x5A, a.nbytes());
    std::memset(b.data, 0x5A, b.nbytes());
    ws.reset();
  }
}

TEST_CASE("workspace: without zero fill, views are not zeroed (NaN bytes under DS_WORKSPACE_POISON)", "[workspace]") {
  Workspace ws;
  ws.set_zero_fill(false);
  Tensor a = ws.alloc("a", DType::f32, {100});
  if (poisoned()) CHECK(all_bytes(a, 0xFF));
  std::memset(a.data, 0x5A, a.nbytes());
  ws.reset();
  Tensor again = ws.alloc("a", DType::f32, {100});  // the same bytes, handed out again
  REQUIRE(again.data == a.data);
  CHECK(all_bytes(again, poisoned() ? 0xFF : 0x5A));
  ws.reset();
  ws.set_zero_fill(true);  // back on: zeroed again, whatever the last pass left
  CHECK(all_bytes(ws.alloc("a", DType::f32, {100}), 0));
}

TEST_CASE("arena: zero_except zeroes every tensor but the skipped ones", "[workspace][arena]") {
  Arena a;
  for (int i = 0; i < 6; ++i) a.add("t" + std::to_string(i), DType::f32, {3 + i});  // sizes off the 64-byte grid
  a.allocate();
  for (size_t i = 0; i < a.size(); ++i) std::memset(a[i].data, 0x3f, a[i].nbytes());  // 0.746... in every float
  a.zero_except({true, false, false, true, true, false});  // runs: 1-2, 5; the last tensor ends the block
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<double> v = to_host_f64(a[i]);
    const bool kept = i == 0 || i == 3 || i == 4;
    for (double x : v) CHECK((kept ? x != 0.0 : x == 0.0));
  }
  a.zero_except(std::vector<bool>(a.size(), false));
  for (size_t i = 0; i < a.size(); ++i)
    for (double x : to_host_f64(a[i])) CHECK(x == 0.0);
}
