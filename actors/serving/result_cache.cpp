#include "actors/serving/result_cache.hpp"

#include <algorithm>
#include <bit>

#include <xxhash.h>

namespace shoal {

// -- key ------------------------------------------------------------------

namespace {

void put_u64(std::string& out, uint64_t x) {
  // Explicit little-endian so keys are identical across hosts.
  char buf[8];
  for (int i = 0; i < 8; ++i) {
    buf[i] = static_cast<char>((x >> (8 * i)) & 0xff);
  }
  out.append(buf, 8);
}

void put_str(std::string& out, std::string_view s) {
  put_u64(out, s.size());
  out.append(s.data(), s.size());
}

} // namespace

cache_key make_cache_key(std::string_view model, uint64_t version,
                         const std::vector<tensor>& inputs) {
  // Every variable-length field is length-prefixed, so the encoding is
  // self-delimiting: two different (model, version, inputs) triples can never
  // produce the same bytes.
  size_t n = 8 + model.size() + 8;
  for (auto& t : inputs) {
    n += 8 + t.name.size() + 1 + 8 + 8 * t.shape.size() + 8 + t.data.size();
  }
  cache_key key;
  key.bytes.reserve(n);
  put_str(key.bytes, model);
  put_u64(key.bytes, version);
  for (auto& t : inputs) {
    put_str(key.bytes, t.name);
    key.bytes.push_back(static_cast<char>(t.type));
    put_u64(key.bytes, t.shape.size());
    for (auto d : t.shape) {
      put_u64(key.bytes, d);
    }
    put_u64(key.bytes, t.data.size());
    key.bytes.append(reinterpret_cast<const char*>(t.data.data()),
                     t.data.size());
  }
  auto h = XXH3_128bits(key.bytes.data(), key.bytes.size());
  key.hash_lo = h.low64;
  key.hash_hi = h.high64;
  return key;
}

// -- frequency sketch -------------------------------------------------------

namespace {

// A count-min sketch with four rows of 4-bit counters, laid out as in
// Caffeine: all four counters of a key live in one 64-byte block, so an
// increment or estimate touches a single cache line. The table holds one
// 64-bit word (16 counters) per expected entry, i.e. four rows of 4x the
// expected entry count; after 10x the expected entry count increments all
// counters are halved, so the sketch forgets old popularity.
class frequency_sketch {
public:
  // Caps the table at 32 MiB: beyond ~4M entries the extra precision is not
  // worth the memory.
  static constexpr uint64_t max_words = uint64_t{1} << 22;

  explicit frequency_sketch(uint64_t expected_entries) {
    auto words =
        std::bit_ceil(std::clamp<uint64_t>(expected_entries, 1024, max_words));
    table_.resize(words / 8);
    block_mask_ = table_.size() - 1;
    sample_size_ = 10 * words;
  }

  void increment(uint64_t lo, uint64_t hi) noexcept {
    auto& b = table_[lo & block_mask_];
    bool added = false;
    for (int i = 0; i < 4; ++i) {
      auto bits = hi >> (i * 8);
      auto& word = b.w[i * 2 + (bits & 1)];
      auto shift = ((bits >> 1) & 15) * 4;
      if (((word >> shift) & 15) != 15) {
        word += uint64_t{1} << shift;
        added = true;
      }
    }
    if (added && ++additions_ >= sample_size_) {
      age();
    }
  }

  uint64_t estimate(uint64_t lo, uint64_t hi) const noexcept {
    auto& b = table_[lo & block_mask_];
    uint64_t result = 15;
    for (int i = 0; i < 4; ++i) {
      auto bits = hi >> (i * 8);
      auto word = b.w[i * 2 + (bits & 1)];
      auto shift = ((bits >> 1) & 15) * 4;
      result = std::min(result, (word >> shift) & 15);
    }
    return result;
  }

  void clear() noexcept {
    std::fill(table_.begin(), table_.end(), block{});
    additions_ = 0;
  }

private:
  struct alignas(64) block {
    uint64_t w[8] = {};
  };

  void age() noexcept {
    for (auto& b : table_) {
      for (auto& w : b.w) {
        w = (w >> 1) & 0x7777777777777777ull;
      }
    }
    additions_ /= 2;
  }

  std::vector<block> table_;
  uint64_t block_mask_ = 0;
  uint64_t sample_size_ = 0;
  uint64_t additions_ = 0;
};

enum class segment : uint8_t { window, probation, protected_ };

struct link {
  link* prev = this;
  link* next = this;
};

// One allocation per cached result, linked into exactly one segment list.
struct entry : link {
  segment seg = segment::window;
  uint64_t charge = 0;
  time_point expires = time_point::max();
  cached_result_ptr value;
  cache_key key;
};

// A circular, intrusive LRU list: MRU at the front, LRU at the back. Moving
// an entry only relinks pointers, so a hit never allocates.
struct lru_list {
  link head;
  uint64_t bytes = 0;

  lru_list() = default;
  lru_list(const lru_list&) = delete;
  lru_list& operator=(const lru_list&) = delete;

  bool empty() const noexcept { return head.next == &head; }

  entry* back() noexcept { return static_cast<entry*>(head.prev); }

  void push_front(entry* e) noexcept {
    e->prev = &head;
    e->next = head.next;
    head.next->prev = e;
    head.next = e;
    bytes += e->charge;
  }

  void unlink(entry* e) noexcept {
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
    bytes -= e->charge;
  }

  void reset() noexcept {
    head.prev = head.next = &head;
    bytes = 0;
  }
};

// An open-addressing table (linear probing, backward-shift deletion) from a
// key's 128-bit hash to its entry. A lookup costs one cache miss for the
// slot and one for the entry; std::unordered_map adds a miss before the
// entry (a bucket points at the node before the first one in it), and on a
// cache larger than the CPU caches those misses are the cost of a hit.
class flat_index {
public:
  flat_index() : slots_(min_slots), mask_(min_slots - 1) {
    // nop
  }

  size_t size() const noexcept { return size_; }

  entry* find(uint64_t lo, uint64_t hi) const noexcept {
    for (auto i = lo & mask_;; i = (i + 1) & mask_) {
      auto& s = slots_[i];
      if (s.e == nullptr) {
        return nullptr;
      }
      if (s.lo == lo && s.e->key.hash_hi == hi) {
        return s.e;
      }
    }
  }

  // Requires that no entry with the same hash is present.
  void insert(entry* e) {
    if ((size_ + 1) * 2 > slots_.size()) {
      rehash(slots_.size() * 2);
    }
    place(e);
    ++size_;
  }

  void erase(const entry* e) noexcept {
    auto i = e->key.hash_lo & mask_;
    while (slots_[i].e != e) {
      i = (i + 1) & mask_;
    }
    // Pull later members of the probe run back over the hole so that every
    // entry stays reachable from its home slot without tombstones.
    for (auto j = (i + 1) & mask_; slots_[j].e != nullptr;
         j = (j + 1) & mask_) {
      auto home = slots_[j].lo & mask_;
      bool reachable =
          i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (!reachable) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = slot{};
    --size_;
  }

  // Calls f(entry*) for every entry, then empties the table.
  template <class F>
  void drain(F&& f) {
    for (auto& s : slots_) {
      if (s.e != nullptr) {
        f(s.e);
      }
    }
    slots_.assign(min_slots, slot{});
    mask_ = min_slots - 1;
    size_ = 0;
  }

private:
  static constexpr size_t min_slots = 64;

  struct slot {
    uint64_t lo = 0;
    entry* e = nullptr;
  };

  void place(entry* e) noexcept {
    auto i = e->key.hash_lo & mask_;
    while (slots_[i].e != nullptr) {
      i = (i + 1) & mask_;
    }
    slots_[i] = slot{e->key.hash_lo, e};
  }

  void rehash(size_t n) {
    std::vector<slot> old(n);
    old.swap(slots_);
    mask_ = n - 1;
    for (auto& s : old) {
      if (s.e != nullptr) {
        place(s.e);
      }
    }
  }

  std::vector<slot> slots_;
  uint64_t mask_;
  size_t size_ = 0;
};

uint64_t charge_of(const cache_key& key, const cached_result& v) {
  return key.bytes.size() + v.outputs_encoded.size() + v.model.size() +
         v.node.size() + result_cache::entry_overhead;
}

} // namespace

// -- result_cache::impl -----------------------------------------------------

struct result_cache::impl {
  explicit impl(const config& cfg)
      : sketch(std::max<uint64_t>(1024, cfg.max_bytes / 1024)) {
    // Written so that NaN maps to 0 instead of reaching the casts below.
    auto clamp = [](double f) { return f > 0.0 ? std::min(f, 1.0) : 0.0; };
    max_bytes = cfg.max_bytes;
    window_max = static_cast<uint64_t>(static_cast<double>(max_bytes) *
                                       clamp(cfg.window_fraction));
    window_max = std::min(window_max, max_bytes);
    main_max = max_bytes - window_max;
    protected_max = static_cast<uint64_t>(static_cast<double>(main_max) *
                                          clamp(cfg.protected_fraction));
  }

  ~impl() { clear(); }

  // Budgets (window_max + main_max == max_bytes).
  uint64_t max_bytes = 0;
  uint64_t window_max = 0;
  uint64_t main_max = 0;
  uint64_t protected_max = 0;

  mutable std::mutex mtx;
  frequency_sketch sketch;
  flat_index index;
  lru_list window;
  lru_list probation;
  lru_list protected_;
  // No entry expires before this; lets expire() skip the sweep. Only ever
  // lowered between sweeps, so it is a safe lower bound.
  time_point earliest_expiry = time_point::max();

  // Written under `mtx`, read without it by stats().
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> misses{0};
  std::atomic<uint64_t> evictions{0};
  std::atomic<uint64_t> expirations{0};
  std::atomic<uint64_t> rejections{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> entries{0};

  static void bump(std::atomic<uint64_t>& x, uint64_t n = 1) noexcept {
    x.store(x.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  lru_list& list_of(segment s) noexcept {
    switch (s) {
    case segment::window:
      return window;
    case segment::probation:
      return probation;
    default:
      return protected_;
    }
  }

  uint64_t main_bytes() const noexcept {
    return probation.bytes + protected_.bytes;
  }

  void publish_size() noexcept {
    bytes.store(window.bytes + main_bytes(), std::memory_order_relaxed);
    entries.store(index.size(), std::memory_order_relaxed);
  }

  // Looks up `key`; a 128-bit hash match with different bytes is a
  // collision and not found.
  entry* find(const cache_key& key) {
    auto* e = index.find(key.hash_lo, key.hash_hi);
    if (e == nullptr) {
      return nullptr;
    }
    if (e->key.bytes != key.bytes) {
      return nullptr;
    }
    return e;
  }

  // Moves `e` to the front (MRU) of segment `to`.
  void move_to(entry* e, segment to) {
    list_of(e->seg).unlink(e);
    e->seg = to;
    list_of(to).push_front(e);
  }

  void remove(entry* e) {
    list_of(e->seg).unlink(e);
    index.erase(e);
    delete e;
  }

  entry* lru_of_main() {
    return probation.empty() ? protected_.back() : probation.back();
  }

  void demote_protected_overflow() {
    while (protected_.bytes > protected_max && !protected_.empty()) {
      move_to(protected_.back(), segment::probation);
    }
  }

  // Extends the eviction plan with `lst`'s entries, LRU first, until `freed`
  // covers `excess`; false as soon as one of them is requested at least as
  // often as the candidate.
  bool plan_victims(lru_list& lst, uint64_t cand_freq, uint64_t excess,
                    uint64_t& freed, size_t& n) {
    for (auto* l = lst.head.prev; l != &lst.head && freed < excess;
         l = l->prev) {
      auto* victim = static_cast<entry*>(l);
      if (cand_freq <=
          sketch.estimate(victim->key.hash_lo, victim->key.hash_hi)) {
        return false;
      }
      freed += victim->charge;
      ++n;
    }
    return true;
  }

  // The TinyLFU admission decision for a candidate leaving the window: it
  // enters probation if main has room, else only if it is requested more
  // often than every main victim it would displace. Weighing against all of
  // them (instead of evicting one at a time) means a losing candidate never
  // costs main an entry.
  void admit(entry* cand) {
    auto need = cand->charge;
    if (main_bytes() + need <= main_max) {
      move_to(cand, segment::probation);
      return;
    }
    if (need > main_max) {
      remove(cand);
      bump(rejections);
      return;
    }
    auto cand_freq = sketch.estimate(cand->key.hash_lo, cand->key.hash_hi);
    auto excess = main_bytes() + need - main_max;
    uint64_t freed = 0;
    size_t from_probation = 0;
    size_t from_protected = 0;
    if (!plan_victims(probation, cand_freq, excess, freed, from_probation) ||
        !plan_victims(protected_, cand_freq, excess, freed, from_protected)) {
      remove(cand);
      bump(rejections);
      return;
    }
    bump(evictions, from_probation + from_protected);
    for (; from_probation > 0; --from_probation) {
      remove(probation.back());
    }
    for (; from_protected > 0; --from_protected) {
      remove(protected_.back());
    }
    move_to(cand, segment::probation);
  }

  // Restores every budget after a put: protected within its share, main
  // within its share (an in-place replacement may have grown an entry), and
  // the window drained into the admission contest.
  void maintain() {
    demote_protected_overflow();
    while (main_bytes() > main_max) {
      remove(lru_of_main());
      bump(evictions);
    }
    while (window.bytes > window_max) {
      admit(window.back());
    }
  }

  void clear() {
    window.reset();
    probation.reset();
    protected_.reset();
    index.drain([](entry* e) { delete e; });
    earliest_expiry = time_point::max();
    sketch.clear();
  }
};

// -- result_cache -----------------------------------------------------------

result_cache::result_cache(config cfg)
    : cfg_(cfg), impl_(std::make_unique<impl>(cfg)) {
  // nop
}

result_cache::~result_cache() = default;

cached_result_ptr result_cache::get(const cache_key& key, time_point now) {
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  auto* e = d.find(key);
  d.sketch.increment(key.hash_lo, key.hash_hi);
  if (e == nullptr) {
    d.bump(d.misses);
    return nullptr;
  }
  if (e->expires <= now) {
    d.remove(e);
    d.publish_size();
    d.bump(d.expirations);
    d.bump(d.misses);
    return nullptr;
  }
  // A second touch in main earns the protected segment; elsewhere a hit
  // only refreshes recency.
  d.move_to(e, e->seg == segment::probation ? segment::protected_ : e->seg);
  if (e->seg == segment::protected_) {
    d.demote_protected_overflow();
  }
  d.bump(d.hits);
  return e->value;
}

void result_cache::put(cache_key key, cached_result_ptr value,
                       std::chrono::milliseconds ttl, time_point now) {
  if (!value) {
    return;
  }
  auto charge = charge_of(key, *value);
  auto expires = ttl.count() > 0 ? now + ttl : time_point::max();
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  d.sketch.increment(key.hash_lo, key.hash_hi);
  auto* e = d.index.find(key.hash_lo, key.hash_hi);
  if (charge > d.max_bytes) {
    // A stale value must not outlive a refresh that could not be stored.
    if (e != nullptr) {
      d.remove(e);
    }
    d.bump(d.rejections);
    d.publish_size();
    return;
  }
  if (e == nullptr) {
    auto fresh = std::make_unique<entry>();
    fresh->key = std::move(key);
    d.index.insert(fresh.get());
    e = fresh.release();
  } else {
    // Replacing keeps the entry's segment and moves it to that segment's
    // MRU end. A colliding key (same hash, other bytes) takes the slot as
    // well: both cannot be held under one hash, and the newer result is the
    // likelier one to be asked for again.
    d.list_of(e->seg).unlink(e);
    e->key = std::move(key);
  }
  e->value = std::move(value);
  e->charge = charge;
  e->expires = expires;
  d.list_of(e->seg).push_front(e);
  d.earliest_expiry = std::min(d.earliest_expiry, expires);
  d.maintain();
  d.publish_size();
}

void result_cache::erase(const cache_key& key) {
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  if (auto* e = d.find(key)) {
    d.remove(e);
    d.publish_size();
  }
}

size_t result_cache::expire(time_point now) {
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  if (now < d.earliest_expiry) {
    return 0;
  }
  size_t n = 0;
  auto next = time_point::max();
  for (auto* lst : {&d.window, &d.probation, &d.protected_}) {
    for (auto* l = lst->head.next; l != &lst->head;) {
      auto* e = static_cast<entry*>(l);
      l = l->next;
      if (e->expires <= now) {
        d.remove(e);
        ++n;
      } else {
        next = std::min(next, e->expires);
      }
    }
  }
  d.earliest_expiry = next;
  d.bump(d.expirations, n);
  d.publish_size();
  return n;
}

void result_cache::clear() {
  auto& d = *impl_;
  std::lock_guard guard{d.mtx};
  d.clear();
  d.publish_size();
}

cache_stats result_cache::stats() const {
  auto& d = *impl_;
  auto ld = [](const std::atomic<uint64_t>& x) {
    return x.load(std::memory_order_relaxed);
  };
  cache_stats s;
  s.hits = ld(d.hits);
  s.misses = ld(d.misses);
  s.evictions = ld(d.evictions);
  s.expirations = ld(d.expirations);
  s.rejections = ld(d.rejections);
  s.bytes = ld(d.bytes);
  s.entries = ld(d.entries);
  return s;
}

} // namespace shoal
