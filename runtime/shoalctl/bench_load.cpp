#include "runtime/shoalctl/bench_load.hpp"

#include "net/wire/half.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include <unistd.h>

namespace shoal::ctl {

namespace {

using std::chrono::duration;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

uint64_t splitmix64(uint64_t& state) noexcept {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class T>
void store_le(uint8_t* p, T v) noexcept {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    std::reverse(bytes, bytes + sizeof(T));
  }
  std::memcpy(p, bytes, sizeof(T));
}

template <class T>
T load_le(const uint8_t* p) noexcept {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) {
    std::reverse(bytes, bytes + sizeof(T));
  }
  T v;
  std::memcpy(&v, bytes, sizeof(T));
  return v;
}

// Uniform in [-1, 1) with `bits` bits of resolution, so the value is exact in
// the target type and every dtype sees the same kind of distribution.
double unit_value(uint64_t x, int bits) noexcept {
  return std::ldexp(static_cast<double>(x >> (64 - bits)), 1 - bits) - 1.0;
}

void fill(tensor& t, uint64_t state) {
  auto n = t.data.size() / dtype_size(t.type);
  auto* p = t.data.data();
  for (size_t i = 0; i < n; ++i) {
    auto x = splitmix64(state);
    switch (t.type) {
    case dtype::f32:
      store_le(p + 4 * i, static_cast<float>(unit_value(x, 24)));
      break;
    case dtype::f64:
      store_le(p + 8 * i, unit_value(x, 53));
      break;
    case dtype::f16:
      store_le(p + 2 * i, f32_to_f16(static_cast<float>(unit_value(x, 11))));
      break;
    case dtype::bf16:
      store_le(p + 2 * i, f32_to_bf16(static_cast<float>(unit_value(x, 8))));
      break;
    case dtype::i8:
      p[i] = static_cast<uint8_t>(x % 100);
      break;
    case dtype::i16:
      store_le(p + 2 * i, static_cast<int16_t>(x % 100));
      break;
    case dtype::i32:
      store_le(p + 4 * i, static_cast<int32_t>(x % 100));
      break;
    case dtype::i64:
      store_le(p + 8 * i, static_cast<int64_t>(x % 100));
      break;
    case dtype::u8:
      p[i] = static_cast<uint8_t>(x);
      break;
    case dtype::boolean:
      p[i] = static_cast<uint8_t>(x & 1);
      break;
    }
  }
}

// Zipf over ranks 1..n by rejection-inversion (Hörmann and Derflinger, as in
// Apache Commons RNG): O(1) memory, so --distinct can be any size.
class zipf_sampler {
public:
  zipf_sampler(uint64_t n, double s)
      : n_(static_cast<double>(n)), s_(s), n_int_(n) {
    h_x1_ = h_integral(1.5) - 1.0;
    h_n_ = h_integral(n_ + 0.5);
    sd_ = 2.0 - h_integral_inverse(h_integral(2.5) - h(2.0));
  }

  template <class Rng>
  uint64_t operator()(Rng& rng) {
    std::uniform_real_distribution<double> unit{0.0, 1.0};
    for (;;) {
      double u = h_n_ + unit(rng) * (h_x1_ - h_n_);
      double x = h_integral_inverse(u);
      double kd = std::floor(x + 0.5);
      if (kd < 1.0) {
        kd = 1.0;
      } else if (kd > n_) {
        kd = n_;
      }
      if (kd - x <= sd_ || u >= h_integral(kd + 0.5) - h(kd)) {
        return std::min(static_cast<uint64_t>(kd), n_int_);
      }
    }
  }

private:
  static double helper1(double x) noexcept {
    return std::abs(x) > 1e-8 ? std::log1p(x) / x
                              : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
  }
  static double helper2(double x) noexcept {
    return std::abs(x) > 1e-8
               ? std::expm1(x) / x
               : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
  }
  double h(double x) const noexcept { return std::exp(-s_ * std::log(x)); }
  double h_integral(double x) const noexcept {
    double log_x = std::log(x);
    return helper2((1.0 - s_) * log_x) * log_x;
  }
  double h_integral_inverse(double x) const noexcept {
    double t = x * (1.0 - s_);
    if (t < -1.0) {
      t = -1.0;
    }
    return std::exp(helper1(t) * x);
  }

  double n_;
  double s_;
  uint64_t n_int_;
  double h_x1_ = 0;
  double h_n_ = 0;
  double sd_ = 0;
};

// Inputs kept ready so hot requests cost a copy, not a regeneration.
constexpr uint64_t input_cache_budget = 64u << 20;
// Open loop: beyond this many requests in flight, sends wait (their latency
// still counts from the scheduled time) instead of exhausting memory.
constexpr size_t max_in_flight = size_t{1} << 20;

class bench_run {
public:
  bench_run(client& c, const model_info& model, const bench_options& opts)
      : c_(c), model_(model), opts_(opts), rng_(opts.seed ^ 0x5eedb4c4ull) {
    base_.op = op_kind::infer;
    base_.model = opts.model;
    base_.version = opts.version;
    base_.cache = opts.cache;
    base_.tenant = opts.tenant;
    // What one cached input costs: its bytes plus the tensors around them.
    auto bytes = input_bytes(model.inputs).value_or(input_cache_budget) +
                 sizeof(std::vector<tensor>) +
                 model.inputs.size() * (sizeof(tensor) + 64);
    if (opts.zipf) {
      zipf_.emplace(std::max<uint64_t>(opts.distinct, 1), *opts.zipf);
      cached_.resize(std::min(opts.distinct, input_cache_budget / bytes));
    } else {
      cached_.resize(opts.hot_set);
      for (size_t i = 0; i < cached_.size(); ++i) {
        cached_[i] = make_inputs(model.inputs, opts.seed, i);
      }
    }
    have_.assign(cached_.size(), !opts.zipf.has_value());
    // Cold inputs start at a random index far above the hot and zipf ranges,
    // so a rerun against a warm cache still misses on them.
    std::random_device rd;
    cold_next_ = (uint64_t{1} << 63) | (uint64_t{rd() & 0x7fffffffu} << 32);
  }

  bench_result run() {
    auto unmatched_before = c_.unmatched_replies();
    auto now = clock_type::now();
    t_start_ = now;
    t_measure_ = now + to_ns(opts_.warmup_s);
    t_end_ = t_measure_ + to_ns(opts_.duration_s);
    last_reply_ = t_measure_;
    next_progress_ = now + milliseconds{250};
    last_progress_ = now;
    bool open = opts_.rate > 0;
    uint64_t sends = 0;
    auto next_send = t_start_;
    if (!open) {
      for (size_t i = 0; i < std::max<size_t>(opts_.concurrency, 1); ++i) {
        issue(t_start_);
      }
    }
    for (;;) {
      now = clock_type::now();
      if (now >= t_end_) {
        break;
      }
      if (open) {
        while (next_send <= now && next_send < t_end_ &&
               c_.in_flight() < max_in_flight) {
          issue(next_send);
          ++sends;
          next_send =
              t_start_ + nanoseconds{static_cast<int64_t>(std::llround(
                             static_cast<double>(sends) * 1e9 / opts_.rate))};
        }
      }
      auto until = std::min(t_end_, next_progress_);
      if (open && next_send < until) {
        until = next_send;
      }
      auto wait = std::chrono::floor<milliseconds>(until - now);
      c_.poll(std::max(wait, milliseconds{0}));
      progress(clock_type::now());
    }
    // Stop sending; every request still out ends within its timeout.
    sending_ = false;
    auto drain_end = clock_type::now() + opts_.timeout + milliseconds{1000};
    while (c_.in_flight() > 0) {
      now = clock_type::now();
      if (now >= drain_end) {
        break;
      }
      c_.poll(std::min(milliseconds{50},
                       std::chrono::ceil<milliseconds>(drain_end - now)));
      progress(clock_type::now());
    }
    if (opts_.progress) {
      std::fprintf(stderr, "\r%*s\r", static_cast<int>(progress_width_), "");
    }
    res_.unmatched = c_.unmatched_replies() - unmatched_before;
    auto measured = std::max(duration<double>(last_reply_ - t_measure_).count(),
                             opts_.duration_s);
    res_.measured_s = measured;
    return std::move(res_);
  }

private:
  static nanoseconds to_ns(double seconds) {
    return nanoseconds{static_cast<int64_t>(std::llround(seconds * 1e9))};
  }

  uint64_t pick() {
    if (zipf_) {
      return (*zipf_)(rng_)-1;
    }
    std::uniform_real_distribution<double> unit{0.0, 1.0};
    if (opts_.hot_set > 0 && unit(rng_) < opts_.hot_ratio) {
      return std::uniform_int_distribution<uint64_t>{0,
                                                     opts_.hot_set - 1}(rng_);
    }
    return cold_next_++;
  }

  std::vector<tensor> inputs_for(uint64_t index) {
    if (index < cached_.size()) {
      if (!have_[index]) {
        cached_[index] = make_inputs(model_.inputs, opts_.seed, index);
        have_[index] = true;
      }
      return cached_[index];
    }
    return make_inputs(model_.inputs, opts_.seed, index);
  }

  void issue(time_point scheduled) {
    auto r = base_;
    r.inputs = inputs_for(pick());
    if (scheduled >= t_measure_) {
      ++res_.requests;
    }
    // Two words of capture: fits std::function's inline buffer, so a request
    // costs no allocation for its handler.
    c_.submit(
        std::move(r),
        [this, scheduled](caf::expected<reply> x) { ended(scheduled, x); },
        opts_.timeout, 0);
  }

  void ended(time_point scheduled, caf::expected<reply>& x) {
    auto now = clock_type::now();
    if (x) {
      ++replies_all_;
    }
    if (scheduled >= t_measure_) {
      if (x) {
        ++res_.replies;
        last_reply_ = std::max(last_reply_, now);
        res_.latency.record(static_cast<uint64_t>(
            std::max<int64_t>(nanoseconds{now - scheduled}.count(), 0)));
        if (x->code == status::ok) {
          ++res_.ok;
          if (x->source == reply_source::cache) {
            ++res_.cache_hits;
          } else if (x->source == reply_source::coalesced) {
            ++res_.coalesced;
          }
        } else {
          ++res_.errors[std::string{to_string(x->code)}];
        }
      } else if (to_status(x.error()) == status::deadline_exceeded) {
        ++res_.timeouts;
      } else {
        ++res_.errors[std::string{to_string(to_status(x.error()))}];
      }
    }
    if (sending_ && opts_.rate <= 0 && now < t_end_) {
      issue(now);
    }
  }

  void progress(time_point now) {
    if (!opts_.progress || now < next_progress_) {
      return;
    }
    auto dt = duration<double>(now - last_progress_).count();
    auto rps =
        dt > 0 ? static_cast<double>(replies_all_ - last_replies_) / dt : 0.0;
    last_progress_ = now;
    last_replies_ = replies_all_;
    next_progress_ = now + milliseconds{250};
    uint64_t errors = res_.timeouts;
    for (auto& [name, n] : res_.errors) {
      errors += n;
    }
    char phase[32];
    if (now < t_measure_) {
      std::snprintf(phase, sizeof(phase), "warmup");
    } else {
      std::snprintf(phase, sizeof(phase), "%6.1fs",
                    duration<double>(now - t_measure_).count());
    }
    char p99[32] = "-";
    if (res_.latency.count() > 0) {
      std::snprintf(p99, sizeof(p99), "%.1f",
                    static_cast<double>(res_.latency.quantile_ns(0.99)) / 1e3);
    }
    char line[160];
    int len = std::snprintf(line, sizeof(line),
                            "%s  %9.0f rps  p99 %10s us  errors %" PRIu64
                            "  in flight %zu",
                            phase, rps, p99, errors, c_.in_flight());
    if (len < 0) {
      return;
    }
    progress_width_ = std::max(progress_width_, static_cast<size_t>(len));
    std::fprintf(stderr, "\r%-*s", static_cast<int>(progress_width_), line);
    std::fflush(stderr);
  }

  client& c_;
  const model_info& model_;
  const bench_options& opts_;
  request base_;
  std::mt19937_64 rng_;
  std::optional<zipf_sampler> zipf_;
  std::vector<std::vector<tensor>> cached_;
  std::vector<bool> have_;
  uint64_t cold_next_ = 0;
  time_point t_start_;
  time_point t_measure_;
  time_point t_end_;
  time_point last_reply_;
  time_point next_progress_;
  time_point last_progress_;
  uint64_t replies_all_ = 0;
  uint64_t last_replies_ = 0;
  size_t progress_width_ = 0;
  bool sending_ = true;
  bench_result res_;
};

std::string us_text(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", static_cast<double>(ns) / 1e3);
  return buf;
}

} // namespace

// -- inputs -----------------------------------------------------------------

std::optional<uint64_t> input_bytes(const std::vector<io_spec>& spec) {
  uint64_t total = 0;
  for (auto& s : spec) {
    uint64_t n = dtype_size(s.type);
    for (auto d : s.shape) {
      if (d < -1) {
        return std::nullopt;
      }
      uint64_t dim = d == -1 ? 1 : static_cast<uint64_t>(d);
      if (__builtin_mul_overflow(n, dim, &n)) {
        return std::nullopt;
      }
    }
    if (__builtin_add_overflow(total, n, &total)) {
      return std::nullopt;
    }
  }
  return total;
}

std::vector<tensor> make_inputs(const std::vector<io_spec>& spec, uint64_t seed,
                                uint64_t index) {
  std::vector<tensor> out;
  out.reserve(spec.size());
  uint64_t base = seed * 0x9e3779b97f4a7c15ull ^
                  (index + 0x632be59bd9b4e019ull) * 0xd1b54a32d192ed03ull;
  for (size_t j = 0; j < spec.size(); ++j) {
    auto& s = spec[j];
    tensor t;
    t.name = s.name;
    t.type = s.type;
    uint64_t n = 1;
    for (auto d : s.shape) {
      auto dim = d < 0 ? uint64_t{1} : static_cast<uint64_t>(d);
      t.shape.push_back(dim);
      n *= dim;
    }
    t.data.resize(n * dtype_size(s.type));
    uint64_t state = base ^ ((j + 1) * 0xa0761d6478bd642full);
    splitmix64(state);
    fill(t, state);
    out.push_back(std::move(t));
  }
  return out;
}

namespace {

// Shortest text that reads back to the same value in the tensor's type.
template <class T>
void append_real(std::string& out, T v, bool json) {
  if (std::isnan(v)) {
    out += json ? "null" : "nan";
  } else if (std::isinf(v)) {
    out += json ? "null" : (v < 0 ? "-inf" : "inf");
  } else {
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, res.ptr);
  }
}

// For people, the float's shortest form shows digits the 16-bit value does
// not have: use the fewest that read back to the same 16 bits. JSON keeps
// the exact value.
void append_16bit(std::string& out, uint16_t bits, bool half, bool json) {
  float v = half ? f16_to_f32(bits) : bf16_to_f32(bits);
  if (json || !std::isfinite(v)) {
    append_real(out, v, json);
    return;
  }
  char buf[32];
  for (int precision = 1; precision <= 9; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    float back = std::strtof(buf, nullptr);
    if ((half ? f32_to_f16(back) : f32_to_bf16(back)) == bits) {
      break;
    }
  }
  out += buf;
}

} // namespace

void append_value(std::string& out, const tensor& t, size_t i, bool json) {
  auto size = dtype_size(t.type);
  if (size == 0 || (i + 1) * size > t.data.size()) {
    out += json ? "null" : "?";
    return;
  }
  const uint8_t* p = t.data.data() + i * size;
  auto integer = [&](auto v) { out += std::to_string(v); };
  switch (t.type) {
  case dtype::f32:
    append_real(out, load_le<float>(p), json);
    break;
  case dtype::f64:
    append_real(out, load_le<double>(p), json);
    break;
  case dtype::f16:
  case dtype::bf16:
    append_16bit(out, load_le<uint16_t>(p), t.type == dtype::f16, json);
    break;
  case dtype::i8:
    integer(static_cast<int>(static_cast<int8_t>(*p)));
    break;
  case dtype::i16:
    integer(load_le<int16_t>(p));
    break;
  case dtype::i32:
    integer(load_le<int32_t>(p));
    break;
  case dtype::i64:
    integer(load_le<int64_t>(p));
    break;
  case dtype::u8:
    integer(static_cast<unsigned>(*p));
    break;
  case dtype::boolean:
    out += *p ? "true" : "false";
    break;
  }
}

// -- latency histogram --------------------------------------------------------

size_t latency_histogram::index_of(uint64_t v) noexcept {
  if (v < sub_count) {
    return static_cast<size_t>(v);
  }
  int msb = 63 - std::countl_zero(v);
  int shift = msb - sub_bits;
  auto sub = static_cast<size_t>((v >> shift) - sub_count);
  return sub_count + static_cast<size_t>(shift) * sub_count + sub;
}

uint64_t latency_histogram::value_of(size_t idx) noexcept {
  if (idx < sub_count) {
    return idx;
  }
  auto shift = (idx - sub_count) / sub_count;
  auto sub = (idx - sub_count) % sub_count;
  uint64_t lower = (uint64_t{sub_count} + sub) << shift;
  // The middle of the bucket halves the worst-case error.
  return lower + ((uint64_t{1} << shift) >> 1);
}

void latency_histogram::record(uint64_t ns) noexcept {
  ++buckets_[index_of(ns)];
  ++count_;
  max_ = std::max(max_, ns);
  sum_ += ns;
}

double latency_histogram::mean_ns() const noexcept {
  return count_ ? static_cast<double>(sum_ / count_) : 0.0;
}

uint64_t latency_histogram::quantile_ns(double q) const noexcept {
  if (count_ == 0) {
    return 0;
  }
  q = std::clamp(q, 0.0, 1.0);
  auto target =
      static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  target = std::clamp<uint64_t>(target, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < bucket_count; ++i) {
    seen += buckets_[i];
    if (seen >= target) {
      return std::min(value_of(i), max_);
    }
  }
  return max_;
}

// -- bench
// ----------------------------------------------------------------------

double bench_result::throughput_rps() const noexcept {
  return measured_s > 0 ? static_cast<double>(replies) / measured_s : 0.0;
}

double bench_result::hit_ratio() const noexcept {
  return ok ? static_cast<double>(cache_hits) / static_cast<double>(ok) : 0.0;
}

bench_result run_bench(client& c, const model_info& model,
                       const bench_options& opts) {
  // Large (its histogram is 60 KB) and used once: keep it off the stack.
  auto run = std::make_unique<bench_run>(c, model, opts);
  return run->run();
}

void print_bench_text(std::ostream& out, const bench_options& opts,
                      const bench_result& res) {
  char buf[256];
  out << "model        " << opts.model;
  if (opts.version) {
    out << " version " << *opts.version;
  }
  out << '\n';
  if (opts.rate > 0) {
    std::snprintf(buf, sizeof(buf), "open loop at %.1f requests/s", opts.rate);
  } else {
    std::snprintf(buf, sizeof(buf), "closed loop, concurrency %zu",
                  opts.concurrency);
  }
  out << "load         " << buf;
  std::snprintf(buf, sizeof(buf), ", %.1f s (after %.1f s warm-up)",
                opts.duration_s, opts.warmup_s);
  out << buf << '\n';
  if (opts.zipf) {
    std::snprintf(buf, sizeof(buf), "zipf s=%.2f over %" PRIu64 " inputs",
                  *opts.zipf, opts.distinct);
  } else {
    std::snprintf(buf, sizeof(buf), "hot ratio %.2f over %zu hot inputs",
                  opts.hot_ratio, opts.hot_set);
  }
  out << "inputs       " << buf << ", cache " << to_string(opts.cache) << '\n';
  out << "requests     " << res.requests << '\n';
  out << "replies      " << res.replies << '\n';
  std::snprintf(buf, sizeof(buf), "%.1f replies/s", res.throughput_rps());
  out << "throughput   " << buf << '\n';
  auto& h = res.latency;
  out << "latency (us) p50 " << us_text(h.quantile_ns(0.5)) << "  p90 "
      << us_text(h.quantile_ns(0.9)) << "  p99 " << us_text(h.quantile_ns(0.99))
      << "  p99.9 " << us_text(h.quantile_ns(0.999)) << "  mean "
      << us_text(static_cast<uint64_t>(h.mean_ns())) << "  max "
      << us_text(h.max_ns()) << '\n';
  std::snprintf(buf, sizeof(buf), "%.3f", res.hit_ratio());
  out << "hit ratio    " << buf << " (" << res.cache_hits << " of " << res.ok
      << " OK replies from cache)\n";
  out << "coalesced    " << res.coalesced << '\n';
  out << "errors       ";
  if (res.errors.empty()) {
    out << "none";
  } else {
    bool first = true;
    for (auto& [name, n] : res.errors) {
      out << (first ? "" : ", ") << name << ' ' << n;
      first = false;
    }
  }
  out << '\n';
  out << "timeouts     " << res.timeouts << '\n';
}

void print_bench_json(std::ostream& out, const bench_result& res) {
  auto& h = res.latency;
  std::string s = "{";
  auto key = [&](std::string_view k) {
    if (s.size() > 1) {
      s += ',';
    }
    append_json_string(s, k);
    s += ':';
  };
  auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1e3; };
  key("requests");
  s += std::to_string(res.requests);
  key("replies");
  s += std::to_string(res.replies);
  key("ok");
  s += std::to_string(res.ok);
  key("throughput_rps");
  append_json_number(s, res.throughput_rps(), 10);
  key("p50_us");
  append_json_number(s, us(h.quantile_ns(0.5)));
  key("p90_us");
  append_json_number(s, us(h.quantile_ns(0.9)));
  key("p99_us");
  append_json_number(s, us(h.quantile_ns(0.99)));
  key("p999_us");
  append_json_number(s, us(h.quantile_ns(0.999)));
  key("mean_us");
  append_json_number(s, h.mean_ns() / 1e3);
  key("max_us");
  append_json_number(s, us(h.max_ns()));
  key("hit_ratio");
  append_json_number(s, res.hit_ratio());
  key("coalesced");
  s += std::to_string(res.coalesced);
  key("errors");
  s += '{';
  bool first = true;
  for (auto& [name, n] : res.errors) {
    if (!first) {
      s += ',';
    }
    first = false;
    append_json_string(s, name);
    s += ':';
    s += std::to_string(n);
  }
  s += '}';
  key("timeouts");
  s += std::to_string(res.timeouts);
  key("unmatched_replies");
  s += std::to_string(res.unmatched);
  key("duration_s");
  append_json_number(s, res.measured_s);
  s += "}\n";
  out << s;
}

// -- JSON helpers
// ---------------------------------------------------------------

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if it is not one.
size_t utf8_len(std::string_view s, size_t i) noexcept {
  auto c = static_cast<unsigned char>(s[i]);
  size_t len;
  uint32_t cp;
  if (c < 0x80) {
    return 1;
  }
  if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  static constexpr uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return len;
}

} // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c == '\n') {
      out += "\\n";
      ++i;
    } else if (c == '\t') {
      out += "\\t";
      ++i;
    } else if (c == '\r') {
      out += "\\r";
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (auto len = utf8_len(s, i); len > 0) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
      ++i;
    }
  }
  out += '"';
}

void append_json_number(std::string& out, double x, int precision) {
  if (!std::isfinite(x)) {
    out += "null";
    return;
  }
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.*g", precision, x);
  out += buf;
}

} // namespace shoal::ctl
