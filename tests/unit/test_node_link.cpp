// Node link tests: the envelope codec (round trip, the documented MAC rule,
// every way a frame can be wrong, without large allocations), then hubs and
// members in one process over loopback TCP with fast timers (20 ms
// heartbeats): joining, routing by name, failure detection of a frozen
// member, restarts on either side, and hostile senders.
#include "net/link/node_link.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>
#include <sodium.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include "net/wire/error.hpp"

// msgpack's zone allocates with ::malloc, which is what is counted
// (tests/unit/alloc_tracker.hpp); operator new stays libzmq's.
#include "tests/unit/alloc_tracker.hpp"

using namespace shoal;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

namespace {

const std::string key = "cluster-secret";

// Sanitizers slow everything down ~10x: floods are scaled down there so
// that every test stays well under 10 s.
#ifdef SHOAL_TEST_SANITIZED
constexpr int flood_scale = 8;
#else
constexpr int flood_scale = 1;
#endif

// -- envelope helpers --------------------------------------------------------

std::string encode(const link_envelope& e, std::string_view secret = key,
                   envelope_limits lim = {}) {
  std::string out;
  auto err = encode_envelope(e, secret, lim, out);
  EXPECT_FALSE(err) << reason_of(err);
  return out;
}

caf::expected<link_envelope> decode(const std::string& f,
                                    std::string_view secret = key,
                                    link_fault* fault = nullptr,
                                    envelope_limits lim = {}) {
  return decode_envelope(reinterpret_cast<const uint8_t*>(f.data()), f.size(),
                         secret, lim, fault);
}

link_envelope sample() {
  return {"app.result", "worker-1", 0x1234567890, 77, 9, "opaque body"};
}

// Hand-built frames for the hostile cases: (key, value writer) pairs, signed
// by the documented rule itself (HMAC over the frame with a zeroed mac
// payload) rather than by the code under test.
using packer_t = msgpack::packer<msgpack::sbuffer>;
struct field {
  std::string key;
  std::function<void(packer_t&)> put;
};

std::function<void(packer_t&)> str_v(std::string s) {
  return [s](packer_t& pk) { pk.pack(s); };
}
std::function<void(packer_t&)> uint_v(uint64_t u) {
  return [u](packer_t& pk) { pk.pack(u); };
}
std::function<void(packer_t&)> bin_v(std::string s) {
  return [s](packer_t& pk) {
    pk.pack_bin(static_cast<uint32_t>(s.size()));
    pk.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
  };
}

std::vector<field> good_fields() {
  return {{"v", uint_v(1)},       {"t", str_v("app.result")},
          {"from", str_v("w-1")}, {"inc", uint_v(42)},
          {"to_inc", uint_v(0)},  {"seq", uint_v(1)},
          {"body", bin_v("x")}};
}

void set(std::vector<field>& fs, const std::string& k,
         std::function<void(packer_t&)> put) {
  for (auto& f : fs) {
    if (f.key == k) {
      f.put = std::move(put);
      return;
    }
  }
  fs.push_back({k, std::move(put)});
}

void erase(std::vector<field>& fs, const std::string& k) {
  std::erase_if(fs, [&](const field& f) { return f.key == k; });
}

std::string sign(std::string frame, std::string_view secret) {
  uint8_t mac[crypto_auth_hmacsha256_BYTES];
  std::memset(frame.data() + frame.size() - 32, 0, 32);
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(
      &st, reinterpret_cast<const unsigned char*>(secret.data()),
      secret.size());
  crypto_auth_hmacsha256_update(
      &st, reinterpret_cast<const unsigned char*>(frame.data()), frame.size());
  crypto_auth_hmacsha256_final(&st, mac);
  std::memcpy(frame.data() + frame.size() - 32, mac, 32);
  return frame;
}

// Mac last, as 32 zero bytes patched by sign().
std::string build(const std::vector<field>& fs, std::string_view secret = key) {
  msgpack::sbuffer sb;
  packer_t pk{sb};
  pk.pack_map(static_cast<uint32_t>(fs.size() + (secret.empty() ? 0 : 1)));
  for (const auto& f : fs) {
    pk.pack(f.key);
    f.put(pk);
  }
  std::string out{sb.data(), sb.size()};
  if (secret.empty()) {
    return out;
  }
  sb.clear();
  pk.pack(std::string{"mac"});
  pk.pack_bin(32);
  out.append(sb.data(), sb.size());
  out.append(32, '\0');
  return sign(std::move(out), secret);
}

void expect_fault(const std::string& frame, link_fault want,
                  const std::string& reason_part, std::string_view secret = key,
                  envelope_limits lim = {}) {
  link_fault f = link_fault::none;
  auto r = decode(frame, secret, &f, lim);
  ASSERT_FALSE(r) << "decoded a bad frame (" << reason_part << ")";
  EXPECT_EQ(f, want) << reason_of(r.error());
  EXPECT_EQ(r.error().code(), static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_NE(reason_of(r.error()).find(reason_part), std::string::npos)
      << reason_of(r.error());
}

// -- link helpers ------------------------------------------------------------

struct state_event {
  std::string peer;
  uint64_t inc;
  peer_state state;
  std::string reason;
  steady::time_point at;
};

struct msg_event {
  std::string peer;
  uint64_t inc;
  std::string type;
  std::string body;
};

// Records what a link's callbacks report; tests wait on it.
struct recorder {
  std::mutex m;
  std::condition_variable cv;
  std::vector<state_event> states;
  std::vector<msg_event> msgs;

  link_handlers handlers() {
    return {[this](const std::string& p, uint64_t inc, std::string_view t,
                   std::string_view b) {
              std::lock_guard<std::mutex> g{m};
              msgs.push_back({p, inc, std::string{t}, std::string{b}});
              cv.notify_all();
            },
            [this](const std::string& p, uint64_t inc, peer_state s,
                   const std::string& r) {
              std::lock_guard<std::mutex> g{m};
              states.push_back({p, inc, s, r, steady::now()});
              cv.notify_all();
            }};
  }

  template <class Pred>
  bool wait(Pred pred, milliseconds timeout = 3s) {
    std::unique_lock<std::mutex> l{m};
    return cv.wait_for(l, timeout, [&] { return pred(); });
  }

  // Index of the first matching state event at or after `from`, or -1.
  // Call with the lock held (inside wait) or after the links stopped.
  int find(const std::string& peer, peer_state s, uint64_t inc = 0,
           size_t from = 0) {
    for (size_t i = from; i < states.size(); ++i) {
      if (states[i].peer == peer && states[i].state == s &&
          (inc == 0 || states[i].inc == inc)) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  bool got(const std::string& peer, peer_state s, uint64_t inc = 0,
           milliseconds timeout = 3s) {
    return wait([&] { return find(peer, s, inc) >= 0; }, timeout);
  }

  bool got_msg(const std::string& type, const std::string& body,
               milliseconds timeout = 3s) {
    return wait(
        [&] {
          for (auto& x : msgs) {
            if (x.type == type && x.body == body) {
              return true;
            }
          }
          return false;
        },
        timeout);
  }

  size_t count(const std::string& peer, peer_state s) {
    std::lock_guard<std::mutex> g{m};
    size_t n = 0;
    for (auto& e : states) {
      n += e.peer == peer && e.state == s;
    }
    return n;
  }
};

constexpr milliseconds hb{20}, suspect{100}, timeout{300};

node_link_config config(link_role role, std::string name, std::string endpoint,
                        std::string secret = key) {
  node_link_config c;
  c.role = role;
  c.name = std::move(name);
  c.endpoint = std::move(endpoint);
  c.secret = std::move(secret);
  c.heartbeat_interval = hb;
  c.suspect_after = suspect;
  c.heartbeat_timeout = timeout;
  return c;
}

std::unique_ptr<node_link> start(node_link_config c, recorder& r) {
  auto l = node_link::start(std::move(c), r.handlers());
  if (!l) {
    ADD_FAILURE() << reason_of(l.error());
    return nullptr;
  }
  return std::move(*l);
}

std::unique_ptr<node_link> hub(recorder& r,
                               std::string ep = "tcp://127.0.0.1:0") {
  return start(config(link_role::hub, "head", std::move(ep)), r);
}

std::unique_ptr<node_link> member(recorder& r, const std::string& name,
                                  const std::string& ep, std::string hello = {},
                                  std::string secret = key) {
  auto c = config(link_role::member, name, ep, std::move(secret));
  c.hello = std::move(hello);
  return start(std::move(c), r);
}

const peer_info* find_peer(const std::vector<peer_info>& ps,
                           const std::string& name) {
  for (auto& p : ps) {
    if (p.name == name) {
      return &p;
    }
  }
  return nullptr;
}

// Counts warn lines about dropped frames, to check the rate limit.
class drop_line_counter : public spdlog::sinks::base_sink<std::mutex> {
public:
  std::atomic<int> lines{0};

protected:
  void sink_it_(const spdlog::details::log_msg& m) override {
    std::string_view s{m.payload.data(), m.payload.size()};
    if (s.find("dropped malformed") != std::string_view::npos) {
      ++lines;
    }
  }
  void flush_() override {}
};

} // namespace

// -- envelope
// ------------------------------------------------------------------

TEST(link_envelope, round_trip) {
  for (std::string secret : {key, std::string{}}) {
    auto frame = encode(sample(), secret);
    auto e = decode(frame, secret);
    ASSERT_TRUE(e) << reason_of(e.error());
    EXPECT_EQ(e->type, "app.result");
    EXPECT_EQ(e->from, "worker-1");
    EXPECT_EQ(e->inc, 0x1234567890u);
    EXPECT_EQ(e->to_inc, 77u);
    EXPECT_EQ(e->seq, 9u);
    EXPECT_EQ(e->body, "opaque body");
  }
  // Unsigned frames carry no mac; an empty body survives.
  EXPECT_LT(encode(sample(), "").size(), encode(sample(), key).size());
  auto s = sample();
  s.body = {};
  auto frame = encode(s);
  auto e = decode(frame);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->body.empty());
}

TEST(link_envelope, mac_follows_the_documented_rule) {
  auto frame = encode(sample());
  // HMAC-SHA256 over the frame with the mac payload (the last 32 bytes, as
  // our encoder writes it last) zeroed.
  EXPECT_EQ(sign(frame, key), frame);
  // Another sender may order keys differently and add keys of its own:
  // still valid, because the bytes are signed, not a re-encoding.
  std::vector<field> fs = {{"zz-extension", str_v("ignored")},
                           {"body", bin_v("b")},
                           {"seq", uint_v(3)},
                           {"from", str_v("other-impl")},
                           {"inc", uint_v(5)},
                           {"t", str_v("app.x")},
                           {"v", uint_v(1)}};
  auto other = build(fs);
  auto e = decode(other);
  ASSERT_TRUE(e) << reason_of(e.error());
  EXPECT_EQ(e->from, "other-impl");
  EXPECT_EQ(e->to_inc, 0u);
}

TEST(link_envelope, every_truncated_prefix_fails_cleanly) {
  for (std::string secret : {key, std::string{}}) {
    auto frame = encode(sample(), secret);
    for (size_t n = 0; n < frame.size(); ++n) {
      link_fault f = link_fault::none;
      auto r = decode(frame.substr(0, n), secret, &f);
      ASSERT_FALSE(r) << "prefix of " << n << " bytes decoded";
      EXPECT_NE(f, link_fault::none);
    }
  }
}

TEST(link_envelope, wrong_types_and_sizes_are_rejected) {
  struct bad_case {
    std::string k;
    std::function<void(packer_t&)> put; // nullptr: remove the key
    std::string reason;
  };
  std::vector<bad_case> cases = {
      {"v", str_v("1"), "v: expected uint, got str"},
      {"v", nullptr, "missing key v"},
      {"t", bin_v("app"), "t: expected str, got bin"},
      {"t", str_v(""), "t: length 0"},
      {"t", str_v(std::string(65, 'a')), "t: length 65"},
      {"from", uint_v(3), "from: expected str, got uint"},
      {"from", str_v(std::string(129, 'n')), "from: length 129"},
      {"from", nullptr, "missing key from"},
      {"inc", [](packer_t& pk) { pk.pack(int64_t{-1}); }, "negative int"},
      {"inc", uint_v(0), "inc must not be 0"},
      {"to_inc", [](packer_t& pk) { pk.pack(1.5); }, "to_inc: expected uint"},
      {"seq", nullptr, "missing key seq"},
      {"seq", [](packer_t& pk) { pk.pack_nil(); }, "seq: expected uint"},
      {"body", str_v("text"), "body: expected bin, got str"},
      {"body", [](packer_t& pk) { pk.pack_array(0); }, "body: expected bin"},
  };
  for (auto& c : cases) {
    auto fs = good_fields();
    if (c.put) {
      set(fs, c.k, c.put);
    } else {
      erase(fs, c.k);
    }
    expect_fault(build(fs), link_fault::malformed, c.reason);
  }
  // A mac that is not a 32-byte bin.
  auto fs = good_fields();
  set(fs, "mac", bin_v(std::string(31, 'm')));
  expect_fault(build(fs, ""), link_fault::malformed, "mac: expected a bin");
  // Duplicate key, non-string key, not a map, trailing bytes.
  fs = good_fields();
  fs.push_back({"seq", uint_v(2)});
  expect_fault(build(fs), link_fault::malformed, "duplicate key seq");
  msgpack::sbuffer sb;
  packer_t pk{sb};
  pk.pack_map(1);
  pk.pack(1);
  pk.pack(2);
  expect_fault({sb.data(), sb.size()}, link_fault::malformed, "not a str");
  expect_fault("\x93\x01\x02\x03", link_fault::malformed, "expected a map");
  expect_fault(encode(sample()) + "x", link_fault::malformed, "trailing");
  expect_fault("\xc1", link_fault::malformed, "malformed msgpack");
  // Another protocol version is named as such.
  fs = good_fields();
  set(fs, "v", uint_v(2));
  expect_fault(build(fs), link_fault::unsupported_version, "version 2");
}

TEST(link_envelope, length_claims_cost_no_allocation) {
  const std::vector<std::string> claims = {
      std::string{"\xdf\xff\xff\xff\xff", 5}, // map32, 4G entries
      std::string{"\xdd\xff\xff\xff\xff", 5}, // array32, 4G items
      std::string{"\xdb\xff\xff\xff\xff", 5}, // str32, 4 GB
      std::string{"\xc6\xff\xff\xff\xff", 5}, // bin32, 4 GB
      std::string{"\xc6\x03\xf0\x00\x00", 5}, // bin32, 63 MB (in limit)
      std::string{"\x81\xa1x\xdd\xff\xff\xff\xff", 8}, // nested array32
      std::string{"\x81\xa1x\xdf\x7f\xff\xff\xff", 8}, // nested map32
      std::string{"\xdf\x00\x00\x00\x20", 5},          // 32 entries, no bytes
  };
  decode(encode(sample())); // warm the decoder's thread-local zone
  for (const auto& c : claims) {
    bool failed = false;
    auto peak = largest_alloc_during([&] { failed = !decode(c); });
    EXPECT_TRUE(failed);
    EXPECT_LT(peak, 64u << 10) << "claim of " << c.size() << " bytes";
  }
}

TEST(link_envelope, authentication) {
  auto frame = encode(sample());
  // Any flipped bit: in the body, in the mac, in a header.
  for (size_t pos : {frame.size() - 40, frame.size() - 1, size_t{20}}) {
    auto bad = frame;
    bad[pos] ^= 0x01;
    link_fault f = link_fault::none;
    ASSERT_FALSE(decode(bad, key, &f)) << "flip at " << pos;
    EXPECT_NE(f, link_fault::none);
  }
  auto tampered = frame;
  tampered[frame.size() - 40] ^= 0x01; // inside the body
  expect_fault(tampered, link_fault::unauthenticated, "wrong mac");
  expect_fault(frame, link_fault::unauthenticated, "wrong mac", "other");
  // No mac while keyed: refused; unkeyed: fine either way.
  auto plain = encode(sample(), "");
  expect_fault(plain, link_fault::unauthenticated, "missing mac");
  EXPECT_TRUE(decode(plain, ""));
  EXPECT_TRUE(decode(frame, ""));
}

TEST(link_envelope, size_limits) {
  envelope_limits small{link_envelope_overhead + 100};
  ASSERT_EQ(small.max_body_bytes(), 100u);
  auto e = sample();
  std::string body(101, 'b');
  e.body = body;
  std::string out = "keep";
  auto err = encode_envelope(e, key, small, out);
  ASSERT_TRUE(err);
  EXPECT_NE(reason_of(err).find("body of 101 bytes"), std::string::npos);
  EXPECT_EQ(out, "keep");
  // A peer with a larger limit: the body is refused, the frame is not big.
  auto frame = encode(e);
  expect_fault(frame, link_fault::oversized, "exceeds the limit", key, small);
  // A frame over the limit is refused before parsing.
  envelope_limits tiny{64};
  expect_fault(frame, link_fault::oversized, "frame of", key, tiny);
  // The encoder refuses fields the decoder would.
  for (auto bad :
       {link_envelope{"", "n", 1, 0, 0, ""},
        link_envelope{std::string_view{body}.substr(0, 65), "n", 1, 0, 0, ""},
        link_envelope{"t", "", 1, 0, 0, ""},
        link_envelope{"t", "n", 0, 0, 0, ""}}) {
    EXPECT_TRUE(encode_envelope(bad, key, {}, out));
  }
}

// -- node link
// -----------------------------------------------------------------

TEST(node_link, hub_and_members_exchange_messages_by_name) {
  recorder rh, r1, r2;
  // Lenient detection (10 missed heartbeats to suspect) so that a loaded
  // machine does not fail the test; 1.2 s idle is still 3 timeouts.
  auto relaxed = [](node_link_config c) {
    c.suspect_after = 200ms;
    c.heartbeat_timeout = 400ms;
    return c;
  };
  recorder* rs[] = {&r1, &r2};
  auto h =
      start(relaxed(config(link_role::hub, "head", "tcp://127.0.0.1:0")), rh);
  ASSERT_TRUE(h);
  auto ep = h->endpoint();
  ASSERT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  ASSERT_NE(ep, "tcp://127.0.0.1:0");
  std::unique_ptr<node_link> ms[2];
  for (int i = 0; i < 2; ++i) {
    auto name = "worker-" + std::to_string(i + 1);
    auto c = relaxed(config(link_role::member, name, ep));
    c.hello = "hello-" + std::to_string(i + 1);
    ms[i] = start(std::move(c), *rs[i]);
  }
  auto& m1 = ms[0];
  auto& m2 = ms[1];
  ASSERT_TRUE(m1 && m2);
  ASSERT_TRUE(rh.got("worker-1", peer_state::up, m1->incarnation()));
  ASSERT_TRUE(rh.got("worker-2", peer_state::up, m2->incarnation()));
  ASSERT_TRUE(r1.got("head", peer_state::up, h->incarnation()));
  ASSERT_TRUE(r2.got("head", peer_state::up, h->incarnation()));
  auto ps = h->peers();
  ASSERT_EQ(ps.size(), 2u);
  ASSERT_TRUE(find_peer(ps, "worker-1") && find_peer(ps, "worker-2"));
  EXPECT_EQ(find_peer(ps, "worker-1")->hello, "hello-1");
  EXPECT_EQ(find_peer(ps, "worker-2")->hello, "hello-2");
  EXPECT_EQ(find_peer(ps, "worker-2")->incarnation, m2->incarnation());

  // Hub to each member by name; members to the hub ("" or its name).
  EXPECT_FALSE(h->send("worker-1", "app.job", "for-1"));
  EXPECT_FALSE(h->send("worker-2", "app.job", "for-2"));
  EXPECT_FALSE(m1->send("", "app.done", "from-1"));
  EXPECT_FALSE(m2->send("head", "app.done", "from-2"));
  ASSERT_TRUE(r1.got_msg("app.job", "for-1"));
  ASSERT_TRUE(r2.got_msg("app.job", "for-2"));
  ASSERT_TRUE(rh.got_msg("app.done", "from-1"));
  ASSERT_TRUE(rh.got_msg("app.done", "from-2"));
  {
    std::lock_guard<std::mutex> g{r1.m};
    ASSERT_EQ(r1.msgs.size(), 1u); // worker-1 did not get worker-2's job
    EXPECT_EQ(r1.msgs[0].peer, "head");
    EXPECT_EQ(r1.msgs[0].inc, h->incarnation());
  }
  {
    std::lock_guard<std::mutex> g{rh.m};
    for (auto& x : rh.msgs) {
      EXPECT_EQ(x.peer, x.body == "from-1" ? "worker-1" : "worker-2");
    }
  }
  EXPECT_EQ(m1->send("elsewhere", "app.x", "").code(),
            static_cast<uint8_t>(errc::not_found));
  EXPECT_EQ(h->send("nobody", "app.x", "").code(),
            static_cast<uint8_t>(errc::not_found));

  // No application traffic for over a second (3 timeouts): heartbeats
  // keep everyone up. (A suspect is tolerated: on a loaded machine one of
  // these threads may not run for a while; it is not what is tested.)
  auto downs = [&] {
    return rh.count("worker-1", peer_state::down) +
           rh.count("worker-2", peer_state::down) +
           r1.count("head", peer_state::down) +
           r2.count("head", peer_state::down);
  };
  std::this_thread::sleep_for(1200ms);
  EXPECT_EQ(downs(), 0u);
  for (auto& p : h->peers()) {
    EXPECT_NE(p.state, peer_state::down) << p.name;
    EXPECT_LT(p.last_seen_age, 400ms) << p.name;
  }
  auto sh = h->stats(), s1 = m1->stats();
  EXPECT_GE(sh.heartbeats_received, 40u); // 2 members x 1.2 s / 20 ms / ~1.5
  EXPECT_GE(s1.heartbeats_received, 20u);
  EXPECT_EQ(sh.messages_sent, 2u);
  EXPECT_EQ(sh.messages_received, 2u);
  EXPECT_EQ(sh.dropped_malformed + sh.dropped_unauthenticated, 0u);
}

TEST(node_link, a_burst_arrives_complete_and_in_order) {
  recorder rh, r1;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto m1 = member(r1, "worker-1", h->endpoint());
  ASSERT_TRUE(r1.got("head", peer_state::up));
  // Far more than ZeroMQ's default high-water mark, sent as fast as the
  // caller can: none may be lost to a healthy peer.
  constexpr int n = 20000 / flood_scale;
  for (int i = 0; i < n; ++i) {
    ASSERT_FALSE(h->send("worker-1", "app.job", std::to_string(i)));
  }
  ASSERT_TRUE(r1.wait([&] { return r1.msgs.size() == n; }, 5s))
      << r1.msgs.size();
  std::lock_guard<std::mutex> g{r1.m};
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(r1.msgs[i].body, std::to_string(i));
  }
  EXPECT_EQ(h->stats().send_failed, 0u);
}

TEST(node_link, frozen_member_goes_down_and_rejoins_without_late_messages) {
  recorder rh, r1, r2;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto m1 = member(r1, "worker-1", h->endpoint(), "h1");
  auto m2 = member(r2, "worker-2", h->endpoint(), "h2");
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));
  ASSERT_TRUE(rh.got("worker-2", peer_state::up));
  ASSERT_TRUE(r1.got("head", peer_state::up));

  // Freeze worker-1; what it "sends" meanwhile is a result computed before
  // the freeze, reaching the hub after it declared the node dead.
  auto t0 = steady::now();
  m1->pause_for_test(900ms);
  ASSERT_FALSE(m1->send("", "app.result", "late"));
  ASSERT_TRUE(rh.got("worker-1", peer_state::down, 0, 2s));
  int sus, down;
  steady::time_point down_at;
  {
    std::lock_guard<std::mutex> g{rh.m};
    sus = rh.find("worker-1", peer_state::suspect);
    down = rh.find("worker-1", peer_state::down);
    down_at = rh.states[down].at;
    const auto& why = rh.states[down].reason;
    ASSERT_EQ(why.rfind("no heartbeat for ", 0), 0u) << why;
    EXPECT_GE(std::stoi(why.substr(17)), timeout.count()) << why;
  }
  ASSERT_GE(sus, 0);
  EXPECT_LT(sus, down);
  auto took = down_at - t0;
  // Not before the timeout since its last heartbeat (sent up to an
  // interval or so before the freeze), not much after.
  EXPECT_GE(took, timeout - 3 * hb);
  EXPECT_LE(took, timeout + hb + 150ms); // + scheduling slack, 2 busy cores
  EXPECT_EQ(h->send("worker-1", "app.job", "x").code(),
            static_cast<uint8_t>(errc::unavailable));

  // After the freeze the hub tells it to rejoin; it re-hellos and is up.
  ASSERT_TRUE(rh.wait(
      [&] { return rh.find("worker-1", peer_state::up, 0, down + 1) >= 0; }));
  ASSERT_TRUE(r1.got("head", peer_state::down));
  ASSERT_TRUE(r1.wait([&] {
    return r1.find("head", peer_state::up, 0,
                   r1.find("head", peer_state::down) + 1) >= 0;
  }));
  {
    std::lock_guard<std::mutex> g{r1.m};
    EXPECT_NE(r1.states[r1.find("head", peer_state::down)].reason.find(
                  "declared down"),
              std::string::npos);
  }
  // "late" did go out (first thing after the freeze) and was refused.
  EXPECT_EQ(m1->stats().messages_sent, 1u);
  ASSERT_FALSE(m1->send("", "app.result", "fresh"));
  ASSERT_TRUE(rh.got_msg("app.result", "fresh"));
  EXPECT_FALSE(rh.got_msg("app.result", "late", 100ms));
  EXPECT_GE(h->stats().dropped_stale, 1u);
  EXPECT_EQ(find_peer(h->peers(), "worker-1")->hello, "h1");
  // The other member never noticed.
  EXPECT_EQ(rh.count("worker-2", peer_state::down), 0u);
  EXPECT_EQ(r2.count("head", peer_state::down), 0u);
}

// More members than the hub's heartbeat rate allows for at the configured
// interval: it lengthens the interval and tells them, so heartbeats go an
// order of magnitude less often both ways, nobody turns suspect in between
// (suspect scales with the interval), and a frozen member is still down
// one timeout after its last message.
TEST(node_link, hub_lengthens_the_heartbeat_interval_for_many_members) {
  recorder rh, r1, r2;
  auto slow = [](node_link_config c) {
    c.suspect_after = 3 * hb;
    c.heartbeat_timeout = 1000ms;
    c.hub_heartbeat_rate = 10; // 2 members: every 200 ms, not 20 ms
    return c;
  };
  auto h = start(slow(config(link_role::hub, "head", "tcp://127.0.0.1:0")), rh);
  ASSERT_TRUE(h);
  auto m1 =
      start(slow(config(link_role::member, "worker-1", h->endpoint())), r1);
  auto m2 =
      start(slow(config(link_role::member, "worker-2", h->endpoint())), r2);
  ASSERT_TRUE(m1 && m2);
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));
  ASSERT_TRUE(rh.got("worker-2", peer_state::up));
  std::this_thread::sleep_for(300ms); // the interval settles
  auto before_h = h->stats(), before_1 = m1->stats();
  std::this_thread::sleep_for(2s);
  auto got_h = h->stats().heartbeats_received - before_h.heartbeats_received;
  auto got_1 = m1->stats().heartbeats_received - before_1.heartbeats_received;
  // 2 s at 200 ms: about 20 from both members, 10 from the hub (200 and
  // 100 at the configured 20 ms).
  EXPECT_GE(got_h, 10u);
  EXPECT_LE(got_h, 40u);
  EXPECT_GE(got_1, 5u);
  EXPECT_LE(got_1, 20u);
  EXPECT_EQ(rh.count("worker-1", peer_state::suspect) +
                rh.count("worker-2", peer_state::suspect) +
                r1.count("head", peer_state::suspect),
            0u);
  auto t0 = steady::now();
  m1->pause_for_test(3s);
  ASSERT_TRUE(rh.got("worker-1", peer_state::down, 0, 3s));
  steady::time_point down_at;
  {
    std::lock_guard<std::mutex> g{rh.m};
    down_at = rh.states[rh.find("worker-1", peer_state::down)].at;
  }
  // Its last heartbeat went up to an interval before the freeze.
  EXPECT_GE(down_at - t0, 1000ms - 250ms);
  EXPECT_LE(down_at - t0, 1000ms + 150ms);
  // One member left: back to 100 ms, which worker-2 learns while the hub
  // still allows for 200 ms.
  auto before_2 = h->stats().heartbeats_received;
  std::this_thread::sleep_for(1500ms);
  EXPECT_GE(h->stats().heartbeats_received - before_2, 10u);
  EXPECT_EQ(rh.count("worker-2", peer_state::suspect) +
                rh.count("worker-2", peer_state::down) +
                r2.count("head", peer_state::suspect),
            0u);
}

TEST(node_link, restarted_member_replaces_its_old_incarnation) {
  recorder rh, r1, r1b;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto m1 = member(r1, "worker-1", h->endpoint(), "first");
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));
  auto old_inc = m1->incarnation();
  // The old process hangs on (its connection stays open and answers ZMTP
  // pings), as when the new one starts on another host: only the new
  // incarnation's hello tells the hub.
  m1->pause_for_test(10s);
  auto m1b = member(r1b, "worker-1", h->endpoint(), "second");
  auto new_inc = m1b->incarnation();
  ASSERT_GT(new_inc, old_inc);
  ASSERT_TRUE(rh.got("worker-1", peer_state::up, new_inc));
  {
    std::lock_guard<std::mutex> g{rh.m};
    int down = rh.find("worker-1", peer_state::down, old_inc);
    ASSERT_GE(down, 0);
    EXPECT_LT(down, rh.find("worker-1", peer_state::up, new_inc));
    EXPECT_NE(rh.states[down].reason.find("lost its session (incarnation"),
              std::string::npos)
        << rh.states[down].reason;
  }
  auto ps = h->peers();
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0].incarnation, new_inc);
  EXPECT_EQ(ps[0].hello, "second");
  ASSERT_FALSE(h->send("worker-1", "app.job", "j"));
  ASSERT_TRUE(r1b.got_msg("app.job", "j"));
  // The old incarnation is reported down once, not again by the timer.
  std::this_thread::sleep_for(timeout + 100ms);
  EXPECT_EQ(rh.count("worker-1", peer_state::down), 1u);
}

// A member's process goes away (its link stops, closing its connection)
// while the hub's timeout is far off: the hub ends the session at once, as
// a timeout would, and a replacement joins at once. With CURVE too, which
// cluster links use whenever a secret is set.
void closed_connection_ends_the_session(bool curve) {
  auto hub_keys = derive_key_pair(key, "hub");
  auto member_keys = derive_key_pair(key, "member");
  recorder rh, r1, r2, r1b;
  auto hc = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  hc.heartbeat_timeout = 60s;
  hc.curve = {curve, hub_keys, {}, {member_keys.public_key}};
  auto h = start(hc, rh);
  ASSERT_TRUE(h);
  auto member_config = [&](const std::string& name) {
    auto c = config(link_role::member, name, h->endpoint());
    c.curve = {curve, member_keys, hub_keys.public_key, {}};
    return c;
  };
  auto m1 = start(member_config("worker-1"), r1);
  auto m2 = start(member_config("worker-2"), r2);
  ASSERT_TRUE(m1 && m2);
  ASSERT_TRUE(rh.got("worker-1", peer_state::up, m1->incarnation()));
  ASSERT_TRUE(rh.got("worker-2", peer_state::up, m2->incarnation()));
  auto old_inc = m1->incarnation();
  m1.reset();
  ASSERT_TRUE(rh.got("worker-1", peer_state::down, old_inc));
  {
    std::lock_guard<std::mutex> g{rh.m};
    const auto& why = rh.states[rh.find("worker-1", peer_state::down)].reason;
    EXPECT_EQ(why.rfind("connection closed", 0), 0u) << why;
  }
  EXPECT_EQ(h->send("worker-1", "app.job", "x").code(),
            static_cast<uint8_t>(errc::unavailable));
  auto m1b = start(member_config("worker-1"), r1b);
  ASSERT_TRUE(m1b);
  ASSERT_TRUE(rh.got("worker-1", peer_state::up, m1b->incarnation()));
  ASSERT_FALSE(h->send("worker-1", "app.job", "j"));
  ASSERT_TRUE(r1b.got_msg("app.job", "j"));
  EXPECT_EQ(rh.count("worker-1", peer_state::down), 1u);
  EXPECT_EQ(rh.count("worker-2", peer_state::down), 0u);
  EXPECT_EQ(r2.count("head", peer_state::down), 0u);
}

TEST(node_link, a_closed_connection_ends_the_session_at_once) {
  closed_connection_ends_the_session(false);
}

TEST(node_link, a_closed_curve_connection_ends_the_session_at_once) {
  closed_connection_ends_the_session(true);
}

TEST(node_link, member_sees_its_hub_connection_close_and_rejoins) {
  recorder rh, rh2, r1;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto ep = h->endpoint();
  auto mc = config(link_role::member, "worker-1", ep);
  mc.heartbeat_timeout = 60s;
  auto m1 = start(mc, r1);
  ASSERT_TRUE(m1);
  ASSERT_TRUE(r1.got("head", peer_state::up, h->incarnation()));
  auto first_inc = m1->incarnation();
  h.reset();
  ASSERT_TRUE(r1.got("head", peer_state::down));
  {
    std::lock_guard<std::mutex> g{r1.m};
    const auto& why = r1.states[r1.find("head", peer_state::down)].reason;
    EXPECT_EQ(why.rfind("connection to the hub closed", 0), 0u) << why;
  }
  // As after a timeout: a new incarnation, so the hub ends the old session.
  EXPECT_GT(m1->incarnation(), first_inc);
  auto h2 = hub(rh2, ep);
  ASSERT_TRUE(h2);
  ASSERT_TRUE(r1.got("head", peer_state::up, h2->incarnation()));
  ASSERT_TRUE(rh2.got("worker-1", peer_state::up, m1->incarnation()));
}

// Sessions that keep ending with a closed connection soon after they open
// (a flapping network, a crash loop): the first is forgiven, after the
// second the member's hellos are held back for a while (here the hub's
// 1 s timeout), then it is let in.
TEST(node_link, a_member_whose_connection_keeps_closing_is_held_back) {
  recorder rh, r3;
  auto hc = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  hc.heartbeat_timeout = 1s;
  auto h = start(hc, rh);
  ASSERT_TRUE(h);
  for (int i = 0; i < 2; ++i) {
    recorder r;
    auto m = member(r, "worker-1", h->endpoint());
    ASSERT_TRUE(m);
    auto inc = m->incarnation();
    ASSERT_TRUE(rh.got("worker-1", peer_state::up, inc)) << "session " << i;
    m.reset();
    ASSERT_TRUE(rh.got("worker-1", peer_state::down, inc)) << "session " << i;
  }
  auto refused_before = h->stats().dropped_stale;
  auto m3 = member(r3, "worker-1", h->endpoint());
  ASSERT_TRUE(m3);
  auto deadline = steady::now() + 3s;
  while (h->stats().dropped_stale == refused_before &&
         steady::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_GT(h->stats().dropped_stale, refused_before) << "hello not held";
  auto peers = h->peers(); // find_peer points into it
  const auto* p = find_peer(peers, "worker-1");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->state, peer_state::down);
  EXPECT_NE(p->incarnation, m3->incarnation());
  EXPECT_FALSE(r3.got("head", peer_state::up, 0, 0ms));
  ASSERT_TRUE(rh.got("worker-1", peer_state::up, m3->incarnation(), 5s));
  ASSERT_TRUE(r3.got("head", peer_state::up));
}

TEST(node_link, restarted_hub_is_rejoined_with_the_latest_hello) {
  recorder rh, rh2, r1;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto ep = h->endpoint();
  auto m1 = member(r1, "worker-1", ep, "replicas: none");
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));
  ASSERT_TRUE(r1.got("head", peer_state::up));
  auto old_inc = h->incarnation();
  ASSERT_FALSE(m1->set_hello("replicas: resnet x2"));
  h.reset();
  auto t0 = steady::now();
  auto h2 = hub(rh2, ep);
  ASSERT_TRUE(h2);
  ASSERT_TRUE(rh2.got("worker-1", peer_state::up, 0, 1500ms));
  EXPECT_LT(steady::now() - t0, 1500ms);
  EXPECT_EQ(find_peer(h2->peers(), "worker-1")->hello, "replicas: resnet x2");
  ASSERT_TRUE(r1.got("head", peer_state::up, h2->incarnation()));
  EXPECT_EQ(r1.count("head", peer_state::down), 1u);
  {
    std::lock_guard<std::mutex> g{r1.m};
    EXPECT_EQ(r1.states[r1.find("head", peer_state::down)].inc, old_inc);
  }
  ASSERT_FALSE(h2->send("worker-1", "app.job", "after-restart"));
  ASSERT_TRUE(r1.got_msg("app.job", "after-restart"));
  ASSERT_FALSE(m1->send("", "app.done", "ok"));
  ASSERT_TRUE(rh2.got_msg("app.done", "ok"));
}

TEST(node_link, member_with_the_wrong_secret_never_comes_up) {
  recorder rh, rbad, rgood;
  auto h = hub(rh);
  ASSERT_TRUE(h);
  auto bad = member(rbad, "intruder", h->endpoint(), "", "wrong-secret");
  auto good = member(rgood, "worker-1", h->endpoint());
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(rh.count("intruder", peer_state::up), 0u);
  EXPECT_EQ(find_peer(h->peers(), "intruder"), nullptr);
  EXPECT_GE(h->stats().dropped_unauthenticated, 5u);
  EXPECT_TRUE(bad->peers().empty());
  EXPECT_EQ(bad->send("", "app.x", "").code(),
            static_cast<uint8_t>(errc::unavailable));
}

TEST(node_link, garbage_is_dropped_counted_and_logged_sparingly) {
  auto counter = std::make_shared<drop_line_counter>();
  // Restores the logger after the links below are gone (declared first).
  struct logger_swap {
    std::shared_ptr<spdlog::logger> saved = spdlog::default_logger();
    ~logger_swap() { spdlog::set_default_logger(saved); }
  } swap;
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("t", counter));
  recorder rh, r1;
  auto c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.max_frame_bytes = 64 << 10;
  auto h = start(std::move(c), rh);
  ASSERT_TRUE(h);
  auto m1 = member(r1, "worker-1", h->endpoint());
  ASSERT_TRUE(rh.got("worker-1", peer_state::up));

  zmq::context_t ctx;
  zmq::socket_t raw{ctx, zmq::socket_type::dealer};
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(h->endpoint());
  std::vector<std::string> junk = {
      "garbage", std::string{"\xdf\xff\xff\xff\xff", 5}, "\x93\x01\x02\x03",
      std::string(1000, '\xc1'), build(good_fields()).substr(0, 30)};
  constexpr int rounds = 200 / flood_scale;
  for (int i = 0; i < rounds; ++i) {
    for (auto& j : junk) {
      raw.send(zmq::buffer(j), zmq::send_flags::none);
    }
  }
  raw.send(zmq::str_buffer("two"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("frames"), zmq::send_flags::none);
  raw.send(zmq::message_t{}, zmq::send_flags::none); // empty frame
  const uint64_t sent = rounds * junk.size() + 2;
  auto deadline = steady::now() + 3s;
  while (h->stats().dropped_malformed < sent && steady::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(h->stats().dropped_malformed, sent);
  // A frame over max_frame_bytes: ZeroMQ drops the connection itself.
  raw.send(zmq::buffer(std::string(100 << 10, 'x')), zmq::send_flags::none);

  // Still serving, and the flood produced a line or two, not a thousand.
  ASSERT_FALSE(h->send("worker-1", "app.job", "still here"));
  ASSERT_TRUE(r1.got_msg("app.job", "still here"));
  ASSERT_FALSE(m1->send("", "app.done", "yes"));
  ASSERT_TRUE(rh.got_msg("app.done", "yes"));
  EXPECT_EQ(h->peers().size(), 1u);
  EXPECT_GE(counter->lines.load(), 1);
  EXPECT_LE(counter->lines.load(), 4);
}

TEST(node_link, speaks_the_documented_protocol_to_a_raw_socket) {
  recorder rh;
  // Slow timers: this peer does not answer heartbeats.
  auto c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.suspect_after = 2s;
  c.heartbeat_timeout = 5s;
  auto h = start(std::move(c), rh);
  ASSERT_TRUE(h);
  zmq::context_t ctx;
  zmq::socket_t raw{ctx, zmq::socket_type::dealer};
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvtimeo, 2000);
  raw.connect(h->endpoint());
  auto send = [&](link_envelope e) {
    e.from = "raw-node";
    e.inc = 500;
    raw.send(zmq::buffer(encode(e)), zmq::send_flags::none);
  };
  // Receives until a frame of `type` (skipping heartbeats).
  auto expect = [&](std::string_view type) -> std::string {
    for (;;) {
      zmq::message_t m;
      if (!raw.recv(m)) {
        ADD_FAILURE() << "no " << type;
        return {};
      }
      auto bytes = m.to_string(); // the envelope's views point into it
      auto e = decode(bytes);
      EXPECT_TRUE(e);
      if (!e || e->type == "link.hb") {
        continue;
      }
      EXPECT_EQ(e->type, type);
      EXPECT_EQ(e->from, "head");
      EXPECT_EQ(e->to_inc, 500u);
      return std::string{e->body};
    }
  };
  send({"app.x", "", 0, 0, 1, "before hello"});
  auto refused = expect("link.rejoin");
  EXPECT_EQ(refused, std::string("\xcf\0\0\0\0\0\0\0\x01", 9));
  send({"link.hello", "", 0, 0, 2, "info"});
  expect("link.welcome");
  ASSERT_TRUE(rh.got("raw-node", peer_state::up, 500));
  send({"app.x", "", 0, h->incarnation(), 3, "one"});
  send({"app.x", "", 0, h->incarnation(), 3, "replayed"});
  send({"app.x", "", 0, h->incarnation() + 1, 4, "misaddressed"});
  send({"app.x", "", 0, 0, 5, "two"});
  ASSERT_TRUE(rh.got_msg("app.x", "two"));
  {
    std::lock_guard<std::mutex> g{rh.m};
    ASSERT_EQ(rh.msgs.size(), 2u);
    EXPECT_EQ(rh.msgs[0].body, "one");
  }
  EXPECT_EQ(h->stats().dropped_stale, 3u); // before hello, replay, misaddr.
}

TEST(node_link, refuses_bad_configs_and_calls) {
  recorder r;
  auto bad = [&](node_link_config c) {
    auto l = node_link::start(std::move(c), r.handlers());
    EXPECT_FALSE(l);
    return l ? errc::none : static_cast<errc>(l.error().code());
  };
  auto c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.name = "";
  EXPECT_EQ(bad(c), errc::config_invalid);
  c.name = "has space";
  EXPECT_EQ(bad(c), errc::config_invalid);
  c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.suspect_after = c.heartbeat_interval;
  EXPECT_EQ(bad(c), errc::config_invalid);
  c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.heartbeat_timeout = c.suspect_after - 1ms;
  EXPECT_EQ(bad(c), errc::config_invalid);
  c = config(link_role::hub, "head", "tcp://127.0.0.1:0");
  c.max_frame_bytes = 10;
  EXPECT_EQ(bad(c), errc::config_invalid);

  auto h = hub(r);
  ASSERT_TRUE(h);
  EXPECT_EQ(bad(config(link_role::hub, "head2", h->endpoint())),
            errc::io_error);
  EXPECT_EQ(bad(config(link_role::member, "m", "nonsense://x")),
            errc::io_error);

  // A member with no hub: nothing to send to yet.
  recorder rm;
  auto lonely = member(rm, "lonely", "tcp://127.0.0.1:1");
  ASSERT_TRUE(lonely);
  EXPECT_EQ(lonely->send("", "app.x", "").code(),
            static_cast<uint8_t>(errc::unavailable));
  EXPECT_EQ(h->send("x", "link.hb", "").code(),
            static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_EQ(h->send("x", std::string(65, 't'), "").code(),
            static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_EQ(h->send("x", "", "").code(),
            static_cast<uint8_t>(errc::invalid_argument));
  EXPECT_EQ(h->send("x", "app.x",
                    std::string(envelope_limits{}.max_body_bytes() + 1, 'b'))
                .code(),
            static_cast<uint8_t>(errc::invalid_argument));
  h->stop();
  h->stop();
  EXPECT_EQ(h->send("x", "app.x", "").code(),
            static_cast<uint8_t>(errc::unavailable));
  EXPECT_NE(new_incarnation(), new_incarnation());
}
