// Dynamic batching: max batch size and max queue delay, concatenation of
// requests along the batch axis and splitting of the outputs.
#include <cstring>

#include <gtest/gtest.h>

#include "actors/serving/batcher.hpp"

using namespace shoal;
using namespace std::chrono_literals;

namespace {

exec_item item(uint64_t ticket, uint64_t rows = 1, float value = 0) {
  exec_item it;
  it.ticket = ticket;
  it.rows = rows;
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {rows, 2};
  t.data.resize(rows * 2 * 4);
  for (uint64_t i = 0; i < rows * 2; ++i) {
    float v = value + static_cast<float>(i);
    std::memcpy(t.data.data() + i * 4, &v, 4);
  }
  it.inputs.push_back(std::move(t));
  return it;
}

float at(const tensor& t, size_t i) {
  float v;
  std::memcpy(&v, t.data.data() + i * 4, 4);
  return v;
}

} // namespace

TEST(batcher, runs_when_max_batch_rows_wait) {
  batcher b{4, 10ms};
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < 3; ++i) {
    b.push(item(i), t0);
    EXPECT_FALSE(b.ready(t0)) << "only " << i + 1 << " of 4 rows";
  }
  b.push(item(3), t0);
  EXPECT_TRUE(b.ready(t0));
  auto batch = b.take();
  ASSERT_EQ(batch.size(), 4u);
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batch[i].ticket, i) << "arrival order is kept";
  }
  EXPECT_TRUE(b.empty());
}

TEST(batcher, never_exceeds_max_batch_rows) {
  batcher b{4, 0us};
  auto t0 = clock_type::now();
  for (uint64_t i = 0; i < 10; ++i) {
    b.push(item(i), t0);
  }
  EXPECT_EQ(b.take().size(), 4u);
  EXPECT_EQ(b.take().size(), 4u);
  EXPECT_EQ(b.take().size(), 2u);
  // Rows, not requests, count: 3 + 2 rows do not fit in 4.
  b.push(item(20, 3), t0);
  b.push(item(21, 2), t0);
  auto first = b.take();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].ticket, 20u);
  EXPECT_EQ(b.take().size(), 1u);
}

TEST(batcher, runs_a_partial_batch_after_max_delay) {
  batcher b{8, 5ms};
  auto t0 = clock_type::now();
  b.push(item(1), t0);
  b.push(item(2), t0 + 2ms);
  EXPECT_FALSE(b.ready(t0 + 4ms));
  EXPECT_EQ(b.time_to_ready(t0 + 4ms), 1000us);
  // The delay counts from the oldest request, not the newest.
  EXPECT_TRUE(b.ready(t0 + 5ms));
  EXPECT_EQ(b.time_to_ready(t0 + 5ms), 0us);
  EXPECT_EQ(b.take().size(), 2u);
}

TEST(batcher, zero_delay_is_ready_at_once) {
  batcher b{32, 0us};
  auto t0 = clock_type::now();
  EXPECT_FALSE(b.ready(t0)) << "an empty queue is never ready";
  b.push(item(1), t0);
  EXPECT_TRUE(b.ready(t0));
}

TEST(batcher, concat_and_split_round_trip_by_rows) {
  std::vector<exec_item> items;
  items.push_back(item(1, 1, 0));
  items.push_back(item(2, 3, 100));
  items.push_back(item(3, 2, 200));
  uint64_t rows = 0;
  auto batch = concat_inputs(items, rows);
  EXPECT_EQ(rows, 6u);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].shape, (std::vector<uint64_t>{6, 2}));
  EXPECT_FLOAT_EQ(at(batch[0], 0), 0);
  EXPECT_FLOAT_EQ(at(batch[0], 2), 100);
  EXPECT_FLOAT_EQ(at(batch[0], 8), 200);
  auto parts = split_outputs(batch, items);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1][0].shape, (std::vector<uint64_t>{3, 2}));
  EXPECT_FLOAT_EQ(at(parts[1][0], 0), 100);
  EXPECT_FLOAT_EQ(at(parts[1][0], 5), 105);
  EXPECT_EQ(parts[2][0].shape, (std::vector<uint64_t>{2, 2}));
  EXPECT_FLOAT_EQ(at(parts[2][0], 3), 203);
}
