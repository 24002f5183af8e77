// Unit tests of the result cache: key construction, W-TinyLFU admission and
// eviction under a byte budget, TTL, and concurrent use.
#include "actors/serving/result_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

using namespace shoal;
using namespace std::chrono_literals;

namespace {

std::vector<tensor> inputs_of(uint32_t i) {
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {1};
  t.data = {static_cast<uint8_t>(i), static_cast<uint8_t>(i >> 8),
            static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 24)};
  return {t};
}

cache_key key_of(uint32_t i, uint64_t version = 1) {
  return make_cache_key("m", version, inputs_of(i));
}

cached_result_ptr value_of(std::string outputs, std::string model = "m") {
  return std::make_shared<cached_result>(
      cached_result{std::move(outputs), std::move(model), 1, "n", 0});
}

// A value whose entry charges exactly `charge` bytes for `key`, so tests can
// reason in whole entries.
cached_result_ptr value_charging(const cache_key& key, uint64_t charge) {
  auto fixed = key.bytes.size() + 2 + result_cache::entry_overhead;
  return value_of(std::string(charge - fixed, 'v'));
}

uint64_t charge_of(const cache_key& key, const cached_result& v) {
  return key.bytes.size() + v.outputs_encoded.size() + v.model.size() +
         v.node.size() + result_cache::entry_overhead;
}

constexpr uint64_t entry_size = 1000;

// 100 entries of 1000 bytes: a window of 1 entry, main of 99, protected 79.
result_cache::config hundred_entries() {
  result_cache::config cfg;
  cfg.max_bytes = 100 * entry_size;
  cfg.window_fraction = 0.01;
  cfg.protected_fraction = 0.8;
  return cfg;
}

void put_sized(result_cache& c, uint32_t i) {
  auto k = key_of(i);
  auto v = value_charging(k, entry_size);
  c.put(std::move(k), std::move(v), 0ms);
}

std::string model_name(uint32_t i) {
  std::string s = "m";
  s += std::to_string(i);
  return s;
}

bool hits(result_cache& c, uint32_t i) {
  return c.get(key_of(i)) != nullptr;
}

} // namespace

// -- keys ---------------------------------------------------------------------

TEST(cache_key, identical_requests_build_identical_keys) {
  auto a = make_cache_key("resnet", 3, inputs_of(7));
  auto b = make_cache_key("resnet", 3, inputs_of(7));
  EXPECT_EQ(a, b);
  EXPECT_FALSE(a.bytes.empty());
}

TEST(cache_key, every_component_changes_the_key) {
  tensor base;
  base.name = "input";
  base.type = dtype::f32;
  base.shape = {2, 3};
  base.data.assign(24, 0x11);
  auto k0 = make_cache_key("m", 1, {base});
  std::vector<std::pair<std::string, cache_key>> variants;
  variants.emplace_back("model", make_cache_key("m2", 1, {base}));
  variants.emplace_back("version", make_cache_key("m", 2, {base}));
  auto t = base;
  t.name = "inpuT";
  variants.emplace_back("name", make_cache_key("m", 1, {t}));
  t = base;
  t.type = dtype::i32; // same size, same bytes
  variants.emplace_back("dtype", make_cache_key("m", 1, {t}));
  t = base;
  t.shape = {3, 2}; // same element count, same bytes
  variants.emplace_back("shape", make_cache_key("m", 1, {t}));
  t = base;
  t.shape = {6};
  variants.emplace_back("rank", make_cache_key("m", 1, {t}));
  t = base;
  t.data[13] ^= 0x01;
  variants.emplace_back("one data bit", make_cache_key("m", 1, {t}));
  variants.emplace_back("extra tensor", make_cache_key("m", 1, {base, base}));
  variants.emplace_back("no tensors", make_cache_key("m", 1, {}));
  for (auto& [what, k] : variants) {
    SCOPED_TRACE(what);
    EXPECT_NE(k.bytes, k0.bytes);
    EXPECT_FALSE(k.hash_lo == k0.hash_lo && k.hash_hi == k0.hash_hi);
  }
}

TEST(cache_key, tensor_boundaries_are_unambiguous) {
  // The same concatenated bytes split differently must not collide.
  tensor a{"a", dtype::u8, {2}, {1, 2}};
  tensor b{"b", dtype::u8, {1}, {3}};
  tensor a2{"a", dtype::u8, {1}, {1}};
  tensor b2{"b", dtype::u8, {2}, {2, 3}};
  EXPECT_NE(make_cache_key("m", 1, {a, b}), make_cache_key("m", 1, {a2, b2}));
  EXPECT_NE(make_cache_key("ab", 1, {}), make_cache_key("a", 1, {}));
}

// -- basic get/put
// ----------------------------------------------------------------

TEST(result_cache, hit_after_put_miss_for_unknown) {
  result_cache c{{}};
  auto v = value_of("outputs");
  c.put(key_of(1), v, 0ms);
  auto got = c.get(key_of(1));
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->outputs_encoded, "outputs");
  EXPECT_EQ(got, v);
  EXPECT_EQ(c.get(key_of(2)), nullptr);
  auto s = c.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes, charge_of(key_of(1), *v));
}

TEST(result_cache, new_model_version_misses_old_entry) {
  result_cache c{{}};
  c.put(key_of(1, 1), value_of("v1"), 0ms);
  EXPECT_EQ(c.get(key_of(1, 2)), nullptr);
  c.put(key_of(1, 2), value_of("v2"), 0ms);
  EXPECT_EQ(c.get(key_of(1, 1))->outputs_encoded, "v1");
  EXPECT_EQ(c.get(key_of(1, 2))->outputs_encoded, "v2");
}

TEST(result_cache, any_input_difference_misses) {
  result_cache c{{}};
  tensor base{"input", dtype::f32, {2, 2}, std::vector<uint8_t>(16, 7)};
  c.put(make_cache_key("m", 1, {base}), value_of("r"), 0ms);
  ASSERT_NE(c.get(make_cache_key("m", 1, {base})), nullptr);
  auto t = base;
  t.name = "other";
  EXPECT_EQ(c.get(make_cache_key("m", 1, {t})), nullptr);
  t = base;
  t.type = dtype::i32;
  EXPECT_EQ(c.get(make_cache_key("m", 1, {t})), nullptr);
  t = base;
  t.shape = {4, 1};
  EXPECT_EQ(c.get(make_cache_key("m", 1, {t})), nullptr);
  t = base;
  t.data[15] = 8;
  EXPECT_EQ(c.get(make_cache_key("m", 1, {t})), nullptr);
  EXPECT_EQ(c.stats().hits, 1u);
  EXPECT_EQ(c.stats().misses, 4u);
}

TEST(result_cache, hash_collision_is_a_miss_and_put_takes_the_slot) {
  // Forge a key with the same hash but different bytes.
  result_cache c{{}};
  auto k1 = key_of(1);
  auto k2 = k1;
  k2.bytes.back() ^= 0x40;
  c.put(k1, value_of("one"), 0ms);
  EXPECT_EQ(c.get(k2), nullptr);
  c.erase(k2); // must not drop k1
  EXPECT_NE(c.get(k1), nullptr);
  c.put(k2, value_of("two"), 0ms);
  EXPECT_EQ(c.get(k1), nullptr);
  EXPECT_EQ(c.get(k2)->outputs_encoded, "two");
  EXPECT_EQ(c.stats().entries, 1u);
}

TEST(result_cache, replacing_a_key_updates_value_and_bytes) {
  result_cache c{{}};
  auto k = key_of(1);
  c.put(k, value_of(std::string(100, 'a')), 0ms);
  auto small = c.stats().bytes;
  c.put(k, value_of(std::string(1000, 'b')), 0ms);
  auto s = c.stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.bytes, small + 900);
  EXPECT_EQ(c.get(k)->outputs_encoded, std::string(1000, 'b'));
  c.put(k, value_of("c"), 0ms);
  EXPECT_EQ(c.stats().bytes, small - 99);
  EXPECT_EQ(c.get(k)->outputs_encoded, "c");
}

TEST(result_cache, erase_and_clear) {
  result_cache c{{}};
  c.put(key_of(1), value_of("a"), 0ms);
  c.put(key_of(2), value_of("b"), 0ms);
  c.erase(key_of(1));
  EXPECT_EQ(c.get(key_of(1)), nullptr);
  EXPECT_NE(c.get(key_of(2)), nullptr);
  c.clear();
  EXPECT_EQ(c.get(key_of(2)), nullptr);
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(c.stats().bytes, 0u);
}

TEST(result_cache, erase_removes_exactly_the_erased_keys) {
  // Thousands of entries, so the index grows and erasures reshuffle probe
  // runs; every surviving key must still be found.
  result_cache c{{}};
  constexpr uint32_t n = 5'000;
  for (uint32_t k = 0; k < n; ++k) {
    c.put(key_of(k), value_of(model_name(k)), 0ms);
  }
  ASSERT_EQ(c.stats().entries, n);
  for (uint32_t k = 0; k < n; k += 3) {
    c.erase(key_of(k));
  }
  for (uint32_t k = 0; k < n; ++k) {
    auto r = c.get(key_of(k));
    if (k % 3 == 0) {
      EXPECT_EQ(r, nullptr) << k;
    } else {
      ASSERT_NE(r, nullptr) << k;
      EXPECT_EQ(r->outputs_encoded, model_name(k));
    }
  }
  for (uint32_t k = 0; k < n; k += 3) {
    c.put(key_of(k), value_of(model_name(k)), 0ms);
  }
  EXPECT_EQ(c.stats().entries, n);
  for (uint32_t k = 0; k < n; ++k) {
    EXPECT_NE(c.get(key_of(k)), nullptr) << k;
  }
}

// -- budget -------------------------------------------------------------------

TEST(result_cache, oversized_entry_is_refused) {
  result_cache::config cfg;
  cfg.max_bytes = 10'000;
  result_cache c{cfg};
  c.put(key_of(1), value_of(std::string(20'000, 'x')), 0ms);
  EXPECT_EQ(c.get(key_of(1)), nullptr);
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(c.stats().bytes, 0u);
  // Bigger than the window (100 bytes) but within the budget: admitted.
  c.put(key_of(2), value_of(std::string(5'000, 'x')), 0ms);
  EXPECT_NE(c.get(key_of(2)), nullptr);
  // Refreshing an entry with an oversized value drops the stale one.
  c.put(key_of(2), value_of(std::string(20'000, 'x')), 0ms);
  EXPECT_EQ(c.get(key_of(2)), nullptr);
  EXPECT_EQ(c.stats().bytes, 0u);
}

TEST(result_cache, bytes_never_exceed_the_budget) {
  result_cache::config cfg;
  cfg.max_bytes = 64 << 10;
  result_cache c{cfg};
  std::mt19937 rng{42};
  std::uniform_int_distribution<size_t> size{0, 12'000};
  std::uniform_int_distribution<uint32_t> id{0, 2'000};
  for (int i = 0; i < 5'000; ++i) {
    auto k = id(rng);
    c.get(key_of(k));
    c.put(key_of(k), value_of(std::string(size(rng), 'x')), 0ms);
    ASSERT_LE(c.stats().bytes, cfg.max_bytes) << "after put " << i;
  }
  auto s = c.stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_GT(s.entries, 0u);
  EXPECT_GT(s.hits, 0u);
  // The cache is actually used, not kept nearly empty.
  EXPECT_GT(s.bytes, cfg.max_bytes / 2);
}

// -- admission
// ------------------------------------------------------------------

TEST(result_cache, scan_does_not_flush_hot_keys) {
  constexpr uint32_t hot = 20;
  constexpr uint32_t scan = 10'000;
  result_cache c{hundred_entries()};
  // A plain LRU of the same 100-entry capacity, fed the same accesses.
  std::list<uint32_t> lru;
  std::unordered_map<uint32_t, std::list<uint32_t>::iterator> lru_index;
  auto lru_access = [&](uint32_t k) {
    auto i = lru_index.find(k);
    if (i != lru_index.end()) {
      lru.splice(lru.begin(), lru, i->second);
      return true;
    }
    lru.push_front(k);
    lru_index[k] = lru.begin();
    if (lru.size() > 100) {
      lru_index.erase(lru.back());
      lru.pop_back();
    }
    return false;
  };
  for (uint32_t k = 0; k < hot; ++k) {
    put_sized(c, k);
    lru_access(k);
  }
  for (int round = 0; round < 10; ++round) {
    for (uint32_t k = 0; k < hot; ++k) {
      EXPECT_TRUE(hits(c, k));
      lru_access(k);
    }
  }
  // One-hit wonders, each requested once (a miss) and stored: 100 times the
  // capacity. The hot set keeps being requested, but only once per five
  // cache-fulls of scan traffic.
  uint32_t cache_hot_hits = 0;
  uint32_t lru_hot_hits = 0;
  uint32_t hot_requests = 0;
  for (uint32_t i = 0; i < scan; ++i) {
    auto k = 1'000 + i;
    EXPECT_FALSE(hits(c, k));
    put_sized(c, k);
    lru_access(k);
    if (i % 500 == 499) {
      for (uint32_t h = 0; h < hot; ++h) {
        ++hot_requests;
        lru_hot_hits += lru_access(h) ? 1 : 0;
        if (hits(c, h)) {
          ++cache_hot_hits;
        } else {
          put_sized(c, h); // as the router would after executing it
        }
      }
    }
  }
  ASSERT_LE(c.stats().bytes, 100 * entry_size);
  EXPECT_EQ(cache_hot_hits, hot_requests);
  EXPECT_EQ(lru_hot_hits, 0u); // what plain LRU does with the same traffic
  for (uint32_t k = 0; k < hot; ++k) {
    EXPECT_TRUE(hits(c, k)) << "hot key " << k;
  }
  EXPECT_GT(c.stats().rejections, scan / 2);
}

TEST(result_cache, frequent_candidate_wins_admission_over_cold) {
  result_cache c{hundred_entries()};
  // 0..98 fill main, 99 sits in the window.
  for (uint32_t k = 0; k < 100; ++k) {
    put_sized(c, k);
  }
  ASSERT_EQ(c.stats().entries, 100u);
  ASSERT_EQ(c.stats().evictions, 0u);
  // Cold: 100 pushes 99 out of the window; 99 was seen once, as often as
  // main's victim, so it is rejected.
  put_sized(c, 100);
  EXPECT_EQ(c.stats().rejections, 1u);
  EXPECT_EQ(c.stats().evictions, 0u);
  // Hot: requested five times (misses) before it is stored.
  constexpr uint32_t h = 5'000;
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(hits(c, h));
  }
  put_sized(c, h);   // pushes cold 100 out: rejected
  put_sized(c, 101); // pushes h out: admitted over main's victim 0
  EXPECT_EQ(c.stats().rejections, 2u);
  EXPECT_EQ(c.stats().evictions, 1u);
  EXPECT_TRUE(hits(c, h));
  EXPECT_FALSE(hits(c, 0));
  EXPECT_FALSE(hits(c, 99));
  EXPECT_FALSE(hits(c, 100));
  EXPECT_TRUE(hits(c, 1));
  EXPECT_LE(c.stats().bytes, 100 * entry_size);
}

TEST(result_cache, hit_in_probation_protects_the_entry) {
  result_cache c{hundred_entries()};
  constexpr uint32_t a = 0; // hit once after admission: promoted
  constexpr uint32_t b = 1; // never hit: stays on probation
  put_sized(c, a);
  put_sized(c, b);
  put_sized(c, 2); // a and b now in main's probation
  EXPECT_TRUE(hits(c, a));
  for (uint32_t k = 3; k < 100; ++k) {
    put_sized(c, k);
  }
  // A stream of moderately popular entries (4 requests each, more than a
  // or b had) displaces everything on probation, oldest first.
  for (uint32_t k = 10'000; k < 10'150; ++k) {
    for (int i = 0; i < 3; ++i) {
      c.get(key_of(k));
    }
    put_sized(c, k);
  }
  // 97 other entries were on probation with b; all of them made room.
  EXPECT_EQ(c.stats().evictions, 98u);
  EXPECT_TRUE(hits(c, a));
  EXPECT_FALSE(hits(c, b));
  for (uint32_t k = 2; k < 99; ++k) {
    EXPECT_FALSE(hits(c, k)) << k;
  }
  EXPECT_LE(c.stats().bytes, 100 * entry_size);
}

TEST(result_cache, old_popularity_fades) {
  result_cache c{hundred_entries()};
  auto request = [&](uint32_t k, int times) {
    for (int i = 0; i < times; ++i) {
      c.get(key_of(k));
    }
  };
  // x was requested 15 times, then stored; it ends up as probation's LRU.
  constexpr uint32_t x = 50'000;
  request(x, 15);
  put_sized(c, x);
  for (uint32_t k = 1; k < 100; ++k) {
    put_sized(c, k);
  }
  // A newcomer requested 10 times loses to x while x's demand is recent.
  request(60'000, 9);
  put_sized(c, 60'000);
  put_sized(c, 100); // 60'000 leaves the window and contests x
  EXPECT_EQ(c.stats().evictions, 0u);
  EXPECT_EQ(c.stats().rejections, 2u); // 99, then 60'000
  // Much later (20'000 requests for other keys, two sketch halvings) the
  // same demand is enough to displace x.
  for (uint32_t k = 100'000; k < 120'000; ++k) {
    c.get(key_of(k));
  }
  request(70'000, 9);
  put_sized(c, 70'000);
  put_sized(c, 101);
  EXPECT_EQ(c.stats().evictions, 1u);
  EXPECT_TRUE(hits(c, 70'000));
  EXPECT_FALSE(hits(c, x));
}

// -- TTL ----------------------------------------------------------------------

TEST(result_cache, entry_expires_after_its_ttl) {
  result_cache c{{}};
  time_point t0{std::chrono::hours{1}};
  c.put(key_of(1), value_of("r"), 100ms, t0);
  EXPECT_NE(c.get(key_of(1), t0 + 50ms), nullptr);
  EXPECT_NE(c.get(key_of(1), t0 + 99ms), nullptr);
  EXPECT_EQ(c.get(key_of(1), t0 + 100ms), nullptr);
  auto s = c.stats();
  EXPECT_EQ(s.hits, 2u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.expirations, 1u);
  EXPECT_EQ(s.entries, 0u);
  EXPECT_EQ(s.bytes, 0u);
}

TEST(result_cache, zero_ttl_never_expires) {
  result_cache c{{}};
  time_point t0{std::chrono::hours{1}};
  c.put(key_of(1), value_of("r"), 0ms, t0);
  EXPECT_NE(c.get(key_of(1), t0 + std::chrono::hours{24 * 365}), nullptr);
  EXPECT_EQ(c.expire(t0 + std::chrono::hours{24 * 365}), 0u);
}

TEST(result_cache, replacing_refreshes_the_ttl) {
  result_cache c{{}};
  time_point t0{std::chrono::hours{1}};
  c.put(key_of(1), value_of("old"), 10ms, t0);
  c.put(key_of(1), value_of("new"), 10ms, t0 + 5ms);
  auto got = c.get(key_of(1), t0 + 12ms);
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->outputs_encoded, "new");
  EXPECT_EQ(c.get(key_of(1), t0 + 15ms), nullptr);
}

TEST(result_cache, expire_sweeps_expired_entries) {
  result_cache c{{}};
  time_point t0{std::chrono::hours{1}};
  c.put(key_of(1), value_of("a"), 10ms, t0);
  c.put(key_of(2), value_of("b"), 20ms, t0);
  c.put(key_of(3), value_of("c"), 0ms, t0);
  EXPECT_EQ(c.expire(t0 + 5ms), 0u);
  EXPECT_EQ(c.expire(t0 + 15ms), 1u);
  EXPECT_EQ(c.stats().entries, 2u);
  EXPECT_EQ(c.expire(t0 + 1h), 1u);
  auto s = c.stats();
  EXPECT_EQ(s.entries, 1u);
  EXPECT_EQ(s.expirations, 2u);
  EXPECT_EQ(s.bytes, charge_of(key_of(3), *value_of("c")));
  EXPECT_NE(c.get(key_of(3), t0 + 1h), nullptr);
  EXPECT_EQ(c.get(key_of(2), t0 + 1h), nullptr);
  // Entries added after a sweep are still found by the next one.
  c.put(key_of(4), value_of("d"), 10ms, t0 + 1h);
  EXPECT_EQ(c.expire(t0 + 2h), 1u);
}

// -- concurrency
// ------------------------------------------------------------------

TEST(result_cache, concurrent_get_put_from_four_threads) {
  result_cache::config cfg;
  cfg.max_bytes = 64 << 10; // small enough to evict constantly
  result_cache c{cfg};
  constexpr int threads = 4;
  constexpr int ops = 20'000;
  std::atomic<uint64_t> gets{0};
  std::atomic<bool> wrong{false};
  std::atomic<bool> over{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::uniform_int_distribution<uint32_t> id{0, 255};
      std::uniform_int_distribution<int> op{0, 99};
      uint64_t local_gets = 0;
      for (int i = 0; i < ops; ++i) {
        auto k = id(rng);
        auto o = op(rng);
        if (o < 70) {
          ++local_gets;
          if (auto r = c.get(key_of(k))) {
            if (r->model != model_name(k)) {
              wrong = true;
            }
          }
        } else if (o < 95) {
          c.put(key_of(k), value_of(std::string(k * 4, 'x'), model_name(k)),
                (k % 3) ? 0ms : 1ms);
        } else if (o < 99) {
          c.erase(key_of(k));
        } else {
          c.expire();
        }
        if (c.stats().bytes > cfg.max_bytes) {
          over = true;
        }
      }
      gets += local_gets;
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  auto s = c.stats();
  EXPECT_FALSE(wrong);
  EXPECT_FALSE(over);
  EXPECT_EQ(s.hits + s.misses, gets.load());
  EXPECT_GT(s.hits, 0u);
  EXPECT_LE(s.bytes, cfg.max_bytes);
}
