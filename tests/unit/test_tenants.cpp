// Tenants: the rate bucket lets `burst` through at once and then `rate`
// per second, slots bound what is in flight, names resolve to their own
// limits or to default's (labelled other), the gateway's memo of its last
// lookups answers as the table does, and a request-log line is one
// JSON object without tensor data.
#include <gtest/gtest.h>

#include "actors/serving/request_log.hpp"
#include "actors/serving/tenants.hpp"

using namespace shoal;

namespace {

constexpr int64_t ms = 1'000'000;

tenant_table table() {
  std::map<std::string, tenant_limits> cfg;
  cfg["metered"].rate = 100;
  cfg["metered"].burst = 10;
  cfg["narrow"].max_inflight = 2;
  cfg["lowly"].max_priority = 7;
  cfg["echoer"].models = {"echo"};
  cfg["heavy"].weight = 3;
  return tenant_table{cfg};
}

} // namespace

TEST(tenants, names_resolve_to_their_limits_or_to_default_as_other) {
  auto t = table();
  EXPECT_EQ(t.size(), 6u) << "five tenants and default";
  auto m = t.resolve("metered");
  EXPECT_EQ(t.name(m.index), "metered");
  EXPECT_EQ(t.label_name(m.label), "metered");
  auto none = t.resolve("");
  EXPECT_EQ(t.name(none.index), "default");
  EXPECT_EQ(t.label_name(none.label), "default");
  auto stranger = t.resolve("stranger");
  EXPECT_EQ(stranger.index, none.index) << "shares default's limits";
  EXPECT_EQ(t.label_name(stranger.label), "other");
  EXPECT_EQ(t.weight(t.resolve("heavy").index), 3u);
}

TEST(tenants, many_tenants_resolve_through_the_hash) {
  std::map<std::string, tenant_limits> cfg;
  for (int i = 0; i < 20; ++i) {
    std::string name = "t";
    name += std::to_string(i);
    cfg[name].weight = static_cast<uint64_t>(i + 1);
  }
  tenant_table t{cfg};
  EXPECT_EQ(t.weight(t.resolve("t7").index), 8u);
  EXPECT_EQ(t.label_name(t.resolve("t77").label), "other");
}

TEST(tenants, the_bucket_lets_burst_through_then_rate_per_second) {
  auto t = table();
  auto i = t.resolve("metered").index;
  int64_t now = 1000 * ms;
  int ok = 0;
  int64_t wait = 0;
  for (int k = 0; k < 50; ++k) {
    auto w = t.take_token(i, now);
    ok += w == 0;
    wait = w > 0 ? w : wait;
  }
  EXPECT_EQ(ok, 10) << "burst 10 at once";
  EXPECT_GT(wait, 0);
  EXPECT_LE(wait, 10 * ms) << "one token every 10 ms";
  // One second later: 100 more (the bucket holds at most burst).
  ok = 0;
  for (int k = 0; k < 1000; ++k) {
    ok += t.take_token(i, now + 1000 * ms + k * ms) == 0;
  }
  EXPECT_GE(ok, 100 + 9);
  EXPECT_LE(ok, 100 + 11);
  auto free = t.resolve("narrow").index;
  for (int k = 0; k < 1000; ++k) {
    EXPECT_EQ(t.take_token(free, now), 0) << "no rate: never limited";
  }
}

TEST(tenants, slots_bound_what_is_in_flight) {
  auto t = table();
  auto i = t.resolve("narrow").index;
  EXPECT_TRUE(t.acquire_slot(i));
  EXPECT_TRUE(t.acquire_slot(i));
  EXPECT_FALSE(t.acquire_slot(i));
  EXPECT_EQ(t.inflight(i), 2u);
  t.release_slot(i);
  EXPECT_TRUE(t.acquire_slot(i));
}

TEST(tenants, models_and_priority_ceiling) {
  auto t = table();
  auto e = t.resolve("echoer").index;
  EXPECT_TRUE(t.allows_model(e, "echo"));
  EXPECT_FALSE(t.allows_model(e, "slow"));
  EXPECT_TRUE(t.allows_model(t.resolve("").index, "slow"));
  auto l = t.resolve("lowly").index;
  EXPECT_EQ(t.cap_priority(l, 0), 7);
  EXPECT_EQ(t.cap_priority(l, 9), 9);
  EXPECT_EQ(t.cap_priority(t.resolve("").index, 0), 0);
}

// The gateway asks through a memo of its last lookups: whatever the order
// of tenants and models, it must answer as the table does (a stale answer
// would let one tenant through on another's allowlist).
TEST(tenants, the_gateway_memo_answers_as_the_table) {
  auto t = table();
  tenant_memo memo{t};
  const char* names[] = {"echoer", "echoer", "metered", "",       "stranger",
                         "echoer", "echo",   "echoerr", "metered"};
  const char* models[] = {"echo", "resnet", "echo", ""};
  for (int round = 0; round < 3; ++round) {
    for (auto* n : names) {
      for (auto* m : models) {
        auto got = memo.resolve(n);
        auto want = t.resolve(n);
        ASSERT_EQ(got.index, want.index) << n;
        ASSERT_EQ(got.label, want.label) << n;
        ASSERT_EQ(memo.allows_model(got.index, m),
                  t.allows_model(want.index, m))
            << n << " " << m;
      }
    }
  }
  auto echoer = memo.resolve("echoer").index;
  EXPECT_TRUE(memo.allows_model(echoer, "echo"));
  EXPECT_FALSE(memo.allows_model(echoer, "resnet"));
  // The same model name under another tenant is that tenant's answer.
  auto metered = memo.resolve("metered").index;
  EXPECT_TRUE(memo.allows_model(metered, "resnet"));
  EXPECT_FALSE(memo.allows_model(echoer, "resnet"));
}

TEST(tenants, counters_by_label) {
  auto t = table();
  auto other = t.resolve("stranger").label;
  t.count(other, status::ok);
  t.count(other, status::ok);
  t.rejected(other, tenant_reject::rate);
  EXPECT_EQ(t.requests(other, status::ok), 2u);
  EXPECT_EQ(t.rejections(other, tenant_reject::rate), 1u);
  EXPECT_EQ(t.requests(t.resolve("").label, status::ok), 0u);
}

TEST(request_log, a_line_is_one_escaped_json_object) {
  request_record rec;
  auto id = request_id::of(std::string{"a\"b\n"});
  rec.id = &id;
  rec.tenant = "paid";
  rec.model = "echo";
  rec.version = 2;
  rec.code = status::resource_exhausted;
  rec.timing_us = timing{1, 2, 3};
  rec.bytes_in = 100;
  rec.bytes_out = 50;
  auto line = request_log::format(rec, 1'764'664'201'123'000'000);
  EXPECT_EQ(line,
            "{\"time\":\"2025-12-02T08:30:01.123Z\",\"id\":\"a\\\"b\\u000a\","
            "\"tenant\":\"paid\",\"model\":\"echo\",\"version\":2,"
            "\"op\":\"infer\",\"status\":\"RESOURCE_EXHAUSTED\","
            "\"source\":\"none\",\"queue_us\":1,\"compute_us\":2,"
            "\"total_us\":3,\"bytes_in\":100,\"bytes_out\":50}");
}

TEST(request_log, sampling_writes_about_the_share_asked) {
  auto none = request_log::open("", 0.0);
  auto all = request_log::open("", 1.0);
  auto tenth = request_log::open("", 0.1);
  ASSERT_TRUE(none && all && tenth);
  int n = 0, a = 0, t = 0;
  for (int k = 0; k < 10000; ++k) {
    n += (*none)->sampled();
    a += (*all)->sampled();
    t += (*tenth)->sampled();
  }
  EXPECT_EQ(n, 0);
  EXPECT_EQ(a, 10000);
  EXPECT_GT(t, 700);
  EXPECT_LT(t, 1300);
}
