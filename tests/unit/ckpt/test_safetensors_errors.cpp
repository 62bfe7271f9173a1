// Malformed safetensors are bad-input errors that name the file and the tensor.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "ckpt/safetensors.h"
#include "tmpdir.h"

using namespace ds;
namespace fs = std::filesystem;

namespace {

// The message of the bad-input error f throws.
template <class F> std::string bad_input(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    return e.what();
  }
  FAIL("no error thrown");
  return "";
}

void write_raw(const std::string& path, const std::string& header, size_t data_bytes, uint64_t hlen_override = 0) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = hlen_override ? hlen_override : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << std::string(data_bytes, '\0');
}

const char* kGate = "model.layers.0.mlp.gate.weight";

std::string write_gate(const test::TmpDir& dir) {
  std::vector<float> w(64 * 16, 0.5f);
  write_safetensors(dir.path, {{kGate, Tensor(w.data(), DType::f32, {64, 16})}}, DType::f32, 0, {});
  return dir / "model.safetensors";
}

}  // namespace

TEST_CASE("a truncated file names the tensor whose data is cut", "[safetensors][errors]") {
  test::TmpDir dir;
  std::string path = write_gate(dir);
  auto full = fs::file_size(path);
  fs::resize_file(path, full - 100);
  std::string msg = bad_input([&] { SafetensorsReader::open(dir.path); });
  CHECK_THAT(msg, Catch::Contains(std::string("tensor '") + kGate + "'"));
  CHECK_THAT(msg, Catch::Contains("data ends at byte " + std::to_string(full) + " but the file has " +
                                  std::to_string(full - 100)));
  CHECK_THAT(msg, Catch::Contains("model.safetensors"));

  fs::resize_file(path, 5);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(path); }), Catch::Contains("too short"));
}

TEST_CASE("shape mismatch names the tensor and both shapes", "[safetensors][errors]") {
  test::TmpDir dir;
  write_gate(dir);
  auto r = SafetensorsReader::open(dir.path);
  std::vector<float> w(64 * 16);
  std::string msg = bad_input([&] { r.read_into(kGate, Tensor(w.data(), DType::f32, {16, 64})); });
  CHECK_THAT(msg, Catch::Contains(kGate));
  CHECK_THAT(msg, Catch::Contains("[64, 16]"));
  CHECK_THAT(msg, Catch::Contains("[16, 64]"));
  std::vector<int32_t> iw(64 * 16);
  CHECK_THAT(bad_input([&] { r.read_into(kGate, Tensor(iw.data(), DType::i32, {64, 16})); }),
             Catch::Contains("cannot be read into i32"));
}

TEST_CASE("a missing tensor names the tensor and the checkpoint", "[safetensors][errors]") {
  test::TmpDir dir;
  write_gate(dir);
  auto r = SafetensorsReader::open(dir.path);
  std::string msg = bad_input([&] { r.info("model.norm.weight"); });
  CHECK(msg == "missing tensor 'model.norm.weight' in " + dir.path);
  std::vector<float> w(4);
  CHECK_THAT(bad_input([&] { r.read_into("nope", Tensor(w.data(), DType::f32, {4})); }),
             Catch::Contains("missing tensor 'nope'"));
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(dir / "nothing-here"); }), Catch::Contains("no such file"));
  test::TmpDir empty;
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(empty.path); }), Catch::Contains("no model.safetensors"));
}

TEST_CASE("corrupted headers are refused", "[safetensors][errors]") {
  test::TmpDir dir;
  std::string path = write_gate(dir);
  {  // garbage in the JSON
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.write("#!garbage", 9);
  }
  std::string msg = bad_input([&] { SafetensorsReader::open(path); });
  CHECK_THAT(msg, Catch::Contains("corrupted header"));
  CHECK_THAT(msg, Catch::Contains(path));

  std::string p2 = dir / "len.safetensors";
  write_raw(p2, "{}", 0, 1u << 20);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p2); }), Catch::Contains("exceeds the file size"));
  write_raw(p2, "[1,2]", 0);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p2); }), Catch::Contains("not a JSON object"));
}

TEST_CASE("dtype, shape and offset inconsistencies are refused", "[safetensors][errors]") {
  test::TmpDir dir;
  std::string p = dir / "x.safetensors";
  write_raw(p, R"({"t":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8);
  std::string msg = bad_input([&] { SafetensorsReader::open(p); });
  CHECK_THAT(msg, Catch::Contains("tensor 't'"));
  CHECK_THAT(msg, Catch::Contains("unsupported dtype 'Q7'"));

  write_raw(p, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("hold 8 bytes but F32 [3] needs 12"));

  write_raw(p, R"({"t":{"dtype":"F32","shape":[-3],"data_offsets":[0,8]}})", 8);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("non-negative"));

  write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("data_offsets"));

  write_raw(p, R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("dtype"));

  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("overlap"));

  write_raw(p, R"({"__metadata__":{"n":3}})", 0);
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(p); }), Catch::Contains("__metadata__"));

  // A well-formed hand-written file (no padding, no metadata) is fine.
  write_raw(p, R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  CHECK(SafetensorsReader::open(p).info("t").nbytes == 8);
}

TEST_CASE("index problems are refused", "[safetensors][errors]") {
  test::TmpDir dir;
  std::vector<float> w(1000, 1.0f);
  write_safetensors(dir.path,
                    {{"a", Tensor(w.data(), DType::f32, {1000})}, {"b", Tensor(w.data(), DType::f32, {1000})}},
                    DType::f32, 4000, {});
  REQUIRE(fs::exists(dir / "model-00002-of-00002.safetensors"));
  fs::remove(dir / "model-00002-of-00002.safetensors");
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(dir.path); }),
             Catch::Contains("shard 'model-00002-of-00002.safetensors' listed in the index does not exist"));

  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}})";
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(dir.path); }), Catch::Contains("tensor 'c' is listed"));
  std::ofstream(dir / "model.safetensors.index.json") << R"({"metadata":{}})";
  CHECK_THAT(bad_input([&] { SafetensorsReader::open(dir.path); }), Catch::Contains("weight_map"));
}
