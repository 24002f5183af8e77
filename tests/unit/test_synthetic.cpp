// The synthetic backend: deterministic outputs, cost, and the fault hook.
#include <cstring>

#include <gtest/gtest.h>

#include "gpu/synthetic/synthetic.hpp"
#include "net/wire/error.hpp"

using namespace shoal;

namespace {

model_spec spec_with(uint64_t crash_after = 0) {
  model_spec s;
  s.name = std::string{"t"}; // (not = "t": a GCC 12 -Wrestrict false positive)
  s.version = 1;
  s.backend = "synthetic";
  s.inputs = {{"x", dtype::f32, {-1, 3}}};
  s.outputs = {{"y", dtype::f32, {-1, 3}}};
  s.max_batch = 8;
  auto p = std::make_shared<synthetic_options>();
  p->scale = 2;
  p->offset = 1;
  p->crash_after_batches = crash_after;
  s.options = p;
  return s;
}

tensor input(uint64_t rows) {
  tensor t{"x", dtype::f32, {rows, 3}, {}};
  t.data.resize(rows * 3 * 4);
  for (uint64_t i = 0; i < rows * 3; ++i) {
    float v = static_cast<float>(i);
    std::memcpy(t.data.data() + i * 4, &v, 4);
  }
  return t;
}

} // namespace

TEST(synthetic, outputs_are_affine_in_the_inputs) {
  synthetic_backend b{spec_with()};
  auto out = b.run({input(2)}, 2);
  ASSERT_TRUE(out);
  ASSERT_EQ(out->size(), 1u);
  auto& y = (*out)[0];
  EXPECT_EQ(y.name, "y");
  EXPECT_EQ(y.shape, (std::vector<uint64_t>{2, 3}));
  for (int i = 0; i < 6; ++i) {
    float v;
    std::memcpy(&v, y.data.data() + i * 4, 4);
    EXPECT_FLOAT_EQ(v, 2.0f * i + 1.0f);
  }
  // Deterministic: the same input gives the same bytes.
  auto again = b.run({input(2)}, 2);
  EXPECT_EQ((*again)[0].data, y.data);
}

TEST(synthetic, fault_hook_crashes_in_the_nth_batch) {
  synthetic_backend b{spec_with(3)};
  EXPECT_TRUE(b.run({input(1)}, 1));
  EXPECT_TRUE(b.run({input(1)}, 1));
  EXPECT_THROW(b.run({input(1)}, 1), synthetic_crash);
}

TEST(synthetic, load_refuses_outputs_it_cannot_derive) {
  auto s = spec_with();
  s.dir = "/models/t/1";
  s.outputs[0].shape = {-1, 4};
  auto b = load_backend(s);
  ASSERT_FALSE(b);
  EXPECT_EQ(to_status(b.error()), status::unavailable);
  EXPECT_NE(reason_of(b.error()).find("outputs[0].shape"), std::string::npos);
}

TEST(synthetic, unknown_backend_is_a_clear_load_error) {
  auto s = spec_with();
  s.dir = "/models/t/1";
  s.backend = "tpu";
  auto b = load_backend(s);
  ASSERT_FALSE(b);
  EXPECT_NE(reason_of(b.error()).find("'tpu'"), std::string::npos);
}
