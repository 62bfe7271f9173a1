// Safetensors round trips: f32, bf16, f16/f64 conversion, integer tensors, sharding + index, header layout.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ckpt/convert.h"
#include "ckpt/safetensors.h"
#include "tmpdir.h"

using namespace ds;
namespace fs = std::filesystem;

namespace {

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * float(i) + 0.1f) * float(i % 7 + 1);
  return v;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string header_of(const std::string& path) {
  std::string s = slurp(path);
  uint64_t n;
  std::memcpy(&n, s.data(), 8);
  return s.substr(8, n);
}

}  // namespace

TEST_CASE("f32 round trip keeps every bit, shapes and metadata", "[safetensors]") {
  test::TmpDir dir;
  auto a = ramp(6 * 5, 1.0f), b = ramp(7, -3.0f), c = ramp(2 * 3 * 4, 0.5f);
  float s = 42.5f;
  NamedTensors ts = {{"model.layers.0.mlp.gate.weight", Tensor(a.data(), DType::f32, {6, 5})},
                     {"model.norm.weight", Tensor(b.data(), DType::f32, {7})},
                     {"model.embed_tokens.weight", Tensor(c.data(), DType::f32, {2, 3, 4})},
                     {"scalar", Tensor(&s, DType::f32, std::vector<int64_t>{})}};
  write_safetensors(dir.path, ts, DType::f32, 0, {{"step", "12"}});
  REQUIRE(fs::exists(dir / "model.safetensors"));
  REQUIRE_FALSE(fs::exists(dir / "model.safetensors.index.json"));

  auto r = SafetensorsReader::open(dir.path);
  REQUIRE(r.names().size() == 4);
  REQUIRE(r.has("model.norm.weight"));
  REQUIRE_FALSE(r.has("model.norm"));
  CHECK(r.info("model.layers.0.mlp.gate.weight").shape == std::vector<int64_t>{6, 5});
  CHECK(r.info("scalar").shape.empty());
  CHECK(r.info("model.norm.weight").dtype == DType::f32);
  auto meta = r.metadata();
  CHECK(meta["step"] == "12");
  CHECK(meta["format"] == "pt");

  std::vector<float> a2(a.size()), b2(b.size()), c2(c.size());
  float s2 = 0;
  r.read_into("model.layers.0.mlp.gate.weight", Tensor(a2.data(), DType::f32, {6, 5}));
  r.read_into("model.norm.weight", Tensor(b2.data(), DType::f32, {7}));
  r.read_into("model.embed_tokens.weight", Tensor(c2.data(), DType::f32, {2, 3, 4}));
  r.read_into("scalar", Tensor(&s2, DType::f32, std::vector<int64_t>{}));
  CHECK(std::memcmp(a.data(), a2.data(), a.size() * 4) == 0);
  CHECK(b == b2);
  CHECK(c == c2);
  CHECK(s2 == 42.5f);

  // Reading the file path directly works too.
  auto r2 = SafetensorsReader::open(dir / "model.safetensors");
  CHECK(r2.names() == r.names());
}

TEST_CASE("header layout follows Hugging Face: metadata first, sorted names, 8-byte padding", "[safetensors]") {
  test::TmpDir dir;
  auto a = ramp(3, 1.0f), b = ramp(5, 1.0f);
  std::vector<int64_t> idx = {1, 2, 3};
  NamedTensors ts = {{"zeta", Tensor(a.data(), DType::f32, {3})},
                     {"alpha", Tensor(b.data(), DType::f32, {5})},
                     {"ids", Tensor(idx.data(), DType::i64, {3})}};
  write_safetensors_file(dir / "optimizer.safetensors", ts, DType::f32);
  std::string file = slurp(dir / "optimizer.safetensors");
  std::string h = header_of(dir / "optimizer.safetensors");
  CHECK(h.size() % 8 == 0);
  CHECK(h.rfind("{\"__metadata__\":{\"format\":\"pt\"}", 0) == 0);
  // 8-byte elements first (alignment), then the 4-byte ones by name.
  auto p_ids = h.find("\"ids\""), p_alpha = h.find("\"alpha\""), p_zeta = h.find("\"zeta\"");
  CHECK(p_ids < p_alpha);
  CHECK(p_alpha < p_zeta);
  CHECK(h.find("\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]}") != std::string::npos);
  CHECK(file.size() == 8 + h.size() + 24 + 12 + 20);

  auto r = SafetensorsReader::open(dir / "optimizer.safetensors");
  std::vector<int64_t> idx2(3);
  r.read_into("ids", Tensor(idx2.data(), DType::i64, {3}));
  CHECK(idx2 == idx);
  std::vector<int32_t> idx3(3);  // integers convert to other integer types
  r.read_into("ids", Tensor(idx3.data(), DType::i32, {3}));
  CHECK(idx3 == std::vector<int32_t>{1, 2, 3});
}

TEST_CASE("bf16 files round to nearest even and read back into f32 or bf16", "[safetensors]") {
  test::TmpDir dir;
  auto a = ramp(64, 3.3f);
  a[0] = 1.00390625f;  // halfway between two bf16 values: rounds to even (1.0)
  NamedTensors ts = {{"w", Tensor(a.data(), DType::f32, {8, 8})}};
  write_safetensors(dir.path, ts, DType::bf16, 0, {});
  auto r = SafetensorsReader::open(dir.path);
  REQUIRE(r.info("w").dtype == DType::bf16);
  REQUIRE(r.info("w").nbytes == 128);

  std::vector<float> f(64);
  r.read_into("w", Tensor(f.data(), DType::f32, {8, 8}));
  std::vector<bf16> h(64);
  r.read_into("w", Tensor(h.data(), DType::bf16, {8, 8}));
  CHECK(f[0] == 1.0f);
  for (size_t i = 0; i < 64; ++i) {
    CHECK(f[i] == bf16_to_f32(f32_to_bf16(a[i])));
    CHECK(h[i].bits == f32_to_bf16(a[i]).bits);
  }
  // bf16 -> f64 and f16 targets as well.
  std::vector<double> d(64);
  r.read_into("w", Tensor(d.data(), DType::f64, {8, 8}));
  CHECK(d[5] == double(f[5]));
}

TEST_CASE("f16 and f64 files convert to f32", "[safetensors]") {
  CHECK(f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(f32_to_f16_bits(-2.0f) == 0xc000);
  CHECK(f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(f32_to_f16_bits(65520.0f) == 0x7c00);          // rounds up to Inf
  CHECK(f32_to_f16_bits(std::ldexp(1.0f, -24)) == 1);  // smallest subnormal
  CHECK(f32_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // halfway: even
  CHECK(f32_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(std::isnan(f16_bits_to_f32(f32_to_f16_bits(NAN))));
  for (float x : {0.0f, 1.0f, -0.5f, 3.140625f, 65504.0f, std::ldexp(1.0f, -20), -std::ldexp(1.0f, -14)})
    CHECK(f16_bits_to_f32(f32_to_f16_bits(x)) == x);

  test::TmpDir dir;
  std::vector<double> a = {1.0, -2.5, 1e-3, 123456.789};
  write_safetensors_file(dir / "a.safetensors", {{"x", Tensor(a.data(), DType::f64, {4})}}, DType::f64);
  write_safetensors_file(dir / "b.safetensors", {{"x", Tensor(a.data(), DType::f64, {4})}}, DType::f16);
  auto r64 = SafetensorsReader::open(dir / "a.safetensors");
  auto r16 = SafetensorsReader::open(dir / "b.safetensors");
  CHECK(r16.info("x").dtype == DType::f16);
  std::vector<float> x(4), y(4);
  r64.read_into("x", Tensor(x.data(), DType::f32, {4}));
  r16.read_into("x", Tensor(y.data(), DType::f32, {4}));
  for (int i = 0; i < 4; ++i) CHECK(x[i] == float(a[i]));
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == -2.5f);
  CHECK(y[2] == Approx(1e-3).epsilon(1e-3));
  CHECK(std::isinf(y[3]));  // above the f16 range
}

TEST_CASE("sharding writes HF shard names and an index, read back as one checkpoint", "[safetensors]") {
  test::TmpDir dir;
  std::vector<std::vector<float>> data;
  NamedTensors ts;
  for (int i = 0; i < 5; ++i) data.push_back(ramp(1000, float(i + 1)));  // 4000 bytes each
  for (int i = 0; i < 5; ++i)
    ts.push_back({"model.layers." + std::to_string(i) + ".w", Tensor(data[i].data(), DType::f32, {10, 100})});
  auto big = ramp(3000, 0.1f);  // above the limit: a shard of its own
  ts.insert(ts.begin() + 2, {"model.big", Tensor(big.data(), DType::f32, {3000})});

  // A stale single file must not survive next to the shards.
  write_safetensors(dir.path, {{"old", Tensor(big.data(), DType::f32, {3000})}}, DType::f32, 0, {});
  REQUIRE(fs::exists(dir / "model.safetensors"));

  write_safetensors(dir.path, ts, DType::f32, 9000, {{"k", "v"}});
  CHECK_FALSE(fs::exists(dir / "model.safetensors"));
  // [l0 l1] [big] [l2 l3] [l4]
  for (int k = 1; k <= 4; ++k) CHECK(fs::exists(dir / ("model-0000" + std::to_string(k) + "-of-00004.safetensors")));
  CHECK_FALSE(fs::exists(dir / "model-00005-of-00005.safetensors"));
  std::string index = slurp(dir / "model.safetensors.index.json");
  CHECK(index.find("\"total_size\": 32000") != std::string::npos);
  CHECK(index.find("\"model.big\": \"model-00002-of-00004.safetensors\"") != std::string::npos);
  CHECK(index.find("\"model.layers.4.w\": \"model-00004-of-00004.safetensors\"") != std::string::npos);

  auto r = SafetensorsReader::open(dir.path);
  CHECK(r.names().size() == 6);
  CHECK_FALSE(r.has("old"));
  CHECK(r.metadata()["k"] == "v");
  for (int i = 0; i < 5; ++i) {
    std::vector<float> back(1000);
    r.read_into("model.layers." + std::to_string(i) + ".w", Tensor(back.data(), DType::f32, {10, 100}));
    CHECK(back == data[i]);
  }
  CHECK(fs::path(r.info("model.big").file).filename() == "model-00002-of-00004.safetensors");
  // The index file itself can be opened.
  CHECK(SafetensorsReader::open(dir / "model.safetensors.index.json").names().size() == 6);

  // Going back to a single file removes the stale index.
  write_safetensors(dir.path, ts, DType::bf16, size_t(1) << 30, {});
  CHECK_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  CHECK(SafetensorsReader::open(dir.path).info("model.big").dtype == DType::bf16);
}

TEST_CASE("raw bytes and empty tensors", "[safetensors]") {
  test::TmpDir dir;
  std::vector<float> a = {1, 2, 3};
  NamedTensors ts = {{"a", Tensor(a.data(), DType::f32, {3})}, {"empty", Tensor(nullptr, DType::f32, {0, 4})}};
  write_safetensors(dir.path, ts, DType::f32, 0, {});
  auto r = SafetensorsReader::open(dir.path);
  auto raw = r.raw("a");
  REQUIRE(raw.size() == 12);
  CHECK(std::memcmp(raw.data(), a.data(), 12) == 0);
  CHECK(r.info("empty").shape == std::vector<int64_t>{0, 4});
  CHECK(r.info("empty").nbytes == 0);
  r.read_into("empty", Tensor(nullptr, DType::f32, {0, 4}));
}
