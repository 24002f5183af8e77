#include "net/link/node_link.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.hpp>

#include "net/security/zap_handler.hpp"
#include "net/wire/error.hpp"

namespace shoal {

namespace {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using std::chrono::milliseconds;

constexpr std::string_view t_hello = "link.hello";
constexpr std::string_view t_welcome = "link.welcome";
constexpr std::string_view t_hb = "link.hb";
constexpr std::string_view t_rejoin = "link.rejoin";
constexpr std::string_view reserved_prefix = "link.";

// Frames read per poll round, so that a flood cannot starve outgoing
// messages and timers.
constexpr int max_reads_per_round = 256;
// Outgoing messages waiting for the link thread; only reached if it is
// stuck, which it should never be.
constexpr size_t max_queued = 1u << 16;
// Frames up to this size are copied into ZeroMQ; larger ones are handed
// over without a copy.
constexpr size_t copy_threshold = 4096;
// The hub's damping of members whose sessions keep ending with a closed
// connection (see node_link.hpp): a session that lasted this many
// heartbeat timeouts was stable, and no hold lasts longer than the cap.
constexpr int flap_window_timeouts = 10;
constexpr int max_hold_timeouts = 30;
// The longest heartbeat interval is heartbeat_timeout / this, so that a
// peer is declared down only after this many heartbeats in a row failed to
// arrive (less one).
constexpr int min_beats_per_timeout = 4;
// The hub's interval grows in steps of this, so that a member more or less
// does not have the hub retell every member.
constexpr milliseconds interval_step{10};
// ZMTP pings go every this many heartbeat timeouts (see open()).
constexpr int ping_timeouts = 10;
// The socket monitor's address: inproc names are per context, and each
// link has its own.
constexpr const char* monitor_endpoint = "inproc://link-monitor";

// The monitor events of a failed handshake (node_link.hpp, "Failed
// handshakes"), and how often one peer's failures are logged.
constexpr int handshake_failed_events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
constexpr std::chrono::seconds handshake_log_every{10};
// Peers remembered for that rate limit. Addresses come from the network;
// forgetting them all costs at most one more line each.
constexpr size_t max_handshake_gates = 1024;

int64_t ms_of(clock_type::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

std::string inc_str(uint64_t inc) {
  return fmt::format("{:x}", inc);
}

std::string restart_reason(uint64_t from, uint64_t to) {
  return "node restarted or lost its session (incarnation " + inc_str(from) +
         " -> " + inc_str(to) + ")";
}

// Names and routing ids come from the network: keep log lines printable.
std::string printable(std::string_view s) {
  constexpr size_t max_len = 48;
  std::string out;
  for (size_t i = 0; i < std::min(s.size(), max_len); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (s.size() > max_len) {
    out += "...";
  }
  return out;
}

// What went wrong in a failed handshake, from its monitor event and value
// (a ZMTP protocol code, a ZAP status or an errno).
std::string handshake_detail(uint16_t event, int32_t value) {
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    return fmt::format("the key was refused, ZAP status {}", value);
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      return "one side speaks CURVE, the other not";
    }
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
      return "CURVE could not decrypt the peer's handshake";
    }
    return fmt::format("ZMTP protocol error {:#x}", value);
  }
  if (value == 0) {
    return "the connection closed during the handshake";
  }
  return fmt::format("the connection closed during the handshake: {}",
                     std::strerror(value));
}

// What an operator should check first.
std::string_view handshake_cause(uint16_t event) {
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    return "this node's key is not in the head's cluster.workers_file";
  }
  return "the peer's cluster.secret differs, or one side has none (with "
         "CURVE key files: cluster.head_public_key is not the head's key)";
}

// The host at the other end of an accepted connection, or "" when the
// connection is gone already. No port: a member retries from a new one
// each time, and the log's rate limit is per host.
std::string peer_host(int fd) {
  sockaddr_storage sa{};
  socklen_t len = sizeof(sa);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return {};
  }
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&sa);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    return buf;
  }
  if (sa.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    return buf;
  }
  return {};
}

// The body of link.rejoin (a seq) and of the hub's link.welcome and link.hb
// (the heartbeat interval in ms): a msgpack uint64 in its fixed 0xcf form.
std::string uint_body(uint64_t seq) {
  std::string b(9, '\0');
  b[0] = static_cast<char>(0xcf);
  for (int i = 0; i < 8; ++i) {
    b[8 - i] = static_cast<char>((seq >> (8 * i)) & 0xff);
  }
  return b;
}

bool parse_uint_body(std::string_view b, uint64_t& seq) {
  if (b.size() != 9 || static_cast<uint8_t>(b[0]) != 0xcf) {
    return false;
  }
  seq = 0;
  for (size_t i = 1; i < 9; ++i) {
    seq = (seq << 8) | static_cast<uint8_t>(b[i]);
  }
  return true;
}

struct peer_rec {
  std::string name;
  uint64_t inc = 0;
  peer_state state = peer_state::down;
  time_point last_seen{}; // under peers_mtx (peers() reads it)
  time_point down_at{};
  time_point last_sent{};
  milliseconds told{0}; // hub: the heartbeat interval it last told the member
  uint64_t last_seq = 0;
  std::string routing_id; // hub: the member's ROUTER identity
  std::string hello;      // hub: the member's last hello body
  // Hub: flap damping (see node_link.hpp).
  time_point up_since{};   // the session's start
  uint32_t flaps = 0;      // short sessions ended by a closed connection
  time_point held_until{}; // no welcome before
};

// Hub: the session whose messages last came over a connection (by fd).
struct fd_owner {
  std::string name;
  uint64_t inc = 0;
};

// The file descriptor of the TCP (or IPC) connection a message came in on;
// -1 where the transport has none. ZMQ_SRCFD is deprecated in favour of
// message properties, which carry no fd; 4.3 still fills it, CURVE or not.
int source_fd(const zmq::message_t& m) {
  return zmq_msg_get(m.handle(), ZMQ_SRCFD);
}

struct command {
  enum class kind : uint8_t { send, pause } what = kind::send;
  std::string peer;
  std::string type;
  std::string body;
  milliseconds pause{0};
};

enum drop_kind : size_t {
  d_malformed,
  d_version,
  d_oversized,
  d_auth,
  d_stale
};
constexpr std::array<std::string_view, 5> drop_names = {
    "malformed", "wrong-version", "oversized", "unauthenticated", "stale"};

drop_kind drop_kind_of(link_fault f) {
  switch (f) {
  case link_fault::unsupported_version:
    return d_version;
  case link_fault::oversized:
    return d_oversized;
  case link_fault::unauthenticated:
    return d_auth;
  default:
    return d_malformed;
  }
}

// One warn line a second per reason at most, so a flood cannot fill the
// disk; the next line says how many were not logged.
struct log_gate {
  time_point last{};
  uint64_t suppressed = 0;
  bool used = false;
};

struct counters {
  std::atomic<uint64_t> messages_sent{0}, messages_received{0};
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0};
  std::atomic<uint64_t> heartbeats_sent{0}, heartbeats_received{0};
  std::atomic<uint64_t> dropped_malformed{0}, dropped_unauthenticated{0};
  std::atomic<uint64_t> dropped_stale{0}, send_failed{0};
  std::atomic<uint64_t> refused_keys{0}, handshake_failures{0};
};

void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.fetch_add(n, std::memory_order_relaxed);
}

caf::error validate(const node_link_config& c) {
  auto bad = [](std::string r) {
    return make_error(errc::config_invalid, "node link: " + r);
  };
  if (c.name.empty() || c.name.size() > link_max_name_bytes) {
    return bad("name must have 1..128 bytes");
  }
  for (char ch : c.name) {
    if (ch <= 0x20 || ch >= 0x7f) {
      return bad("name '" + printable(c.name) +
                 "' must be printable ASCII without spaces");
    }
  }
  if (c.endpoint.empty()) {
    return bad("endpoint is empty");
  }
  if (c.heartbeat_interval.count() <= 0 ||
      c.suspect_after <= c.heartbeat_interval ||
      c.heartbeat_timeout < c.suspect_after) {
    return bad("need 0 < heartbeat_interval < suspect_after <= "
               "heartbeat_timeout");
  }
  if (c.max_frame_bytes <= link_envelope_overhead) {
    return bad("max_frame_bytes must exceed " +
               std::to_string(link_envelope_overhead));
  }
  if (c.hello.size() > envelope_limits{c.max_frame_bytes}.max_body_bytes()) {
    return bad("hello body over the frame limit");
  }
  if (c.sndhwm < 0 || c.rcvhwm < 0 || c.forget_after.count() < 0) {
    return bad("negative sndhwm, rcvhwm or forget_after");
  }
  return {};
}

} // namespace

std::string_view to_string(peer_state s) noexcept {
  switch (s) {
  case peer_state::up:
    return "up";
  case peer_state::suspect:
    return "suspect";
  case peer_state::down:
    return "down";
  }
  return "unknown";
}

uint64_t new_incarnation() {
  static std::atomic<uint64_t> last{0};
  if (sodium_init() < 0) {
    throw std::runtime_error("libsodium initialisation failed");
  }
  auto ms = std::chrono::duration_cast<milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  uint64_t fresh = (static_cast<uint64_t>(ms) << 20) |
                   randombytes_uniform(uint32_t{1} << 20);
  auto prev = last.load();
  uint64_t next;
  do {
    next = std::max(fresh, prev + 1);
  } while (!last.compare_exchange_weak(prev, next));
  return next;
}

struct node_link::impl {
  node_link_config cfg;
  link_handlers handlers;
  envelope_limits lim;
  // A member renews it when it loses its hub (see hub_lost); read by
  // incarnation() from other threads.
  std::atomic<uint64_t> inc{0};
  std::string bound;
  zmq::context_t ctx;
  zmq::socket_t sock;
  // The socket monitor's events: connections accepted and closed.
  zmq::socket_t mon;
  int wake_fd = -1;
  int stop_fd = -1;
  std::thread thread;
  std::atomic<std::thread::id> link_tid{};
  counters st;

  // Shared with callers, under q_mtx.
  std::mutex q_mtx;
  std::condition_variable q_cv; // ends a test pause early on stop
  std::vector<command> queue;
  std::string hello_body;
  bool closing = false;

  // Written only by the link thread, always under peers_mtx; the link
  // thread reads without it.
  mutable std::mutex peers_mtx;
  std::map<std::string, peer_rec, std::less<>> peers;
  std::string hub; // member: the name of the hub's record, "" before

  std::mutex stop_mtx;
  bool stopped = false;

  // Link thread only.
  uint64_t seq = 0;
  time_point next_hb{};
  time_point last_tick{};
  time_point detect_due{}; // the earliest peer deadline, or earlier
  // The heartbeat interval in force (node_link.hpp, "Heartbeat cadence"):
  // the hub's choice; on a member, what its hub announced.
  milliseconds ivl{};
  std::string ivl_body; // hub: ivl as the body of welcomes and heartbeats
  // Hub: the interval before it last shrank, which the detector allows for
  // until prev_ivl_until: a member learns the shorter one from the next
  // heartbeat it gets, and its own next one may still come the old way.
  milliseconds prev_ivl{};
  time_point prev_ivl_until{};
  // Silence after which a live peer is suspect.
  clock_type::duration suspect_span{};
  std::string frame;
  std::vector<command> batch;
  std::vector<zmq::message_t> parts;
  std::array<log_gate, drop_names.size()> gates;
  uint64_t last_hello_seq = 0;                             // member
  time_point hello_due{};                                  // member
  time_point last_hello_at{};                              // member
  std::unordered_map<std::string, time_point> rejoin_sent; // hub, by id
  int msg_fd = -1; // the connection of the message being handled
  std::unordered_map<int, fd_owner> fd_owners; // hub
  // Failed handshakes: the log's rate limit per peer; on the hub, the host
  // of each connection accepted and a failure waiting for the DISCONNECTED
  // that names its connection (see on_handshake_failed).
  std::unordered_map<std::string, log_gate> handshake_gates;
  std::unordered_map<int, std::string> accepted_from;           // hub
  std::optional<std::pair<uint16_t, int32_t>> failed_handshake; // hub
  // Sessions whose connection closed, ended once what they sent before the
  // close has been read (member: at most the hub's).
  std::vector<fd_owner> closed;

  bool is_hub() const { return cfg.role == link_role::hub; }

  peer_rec* current_hub() {
    auto it = peers.find(hub);
    return hub.empty() || it == peers.end() ? nullptr : &it->second;
  }

  bool hub_live() const {
    auto it = peers.find(hub);
    return !hub.empty() && it != peers.end() &&
           it->second.state != peer_state::down;
  }

  // -- events ----------------------------------------------------------------

  void drop(drop_kind k, std::string_view source, std::string_view why) {
    switch (k) {
    case d_auth:
      bump(st.dropped_unauthenticated);
      break;
    case d_stale:
      bump(st.dropped_stale);
      break;
    default:
      bump(st.dropped_malformed);
    }
    auto& g = gates[k];
    auto now = clock_type::now();
    if (g.used && now - g.last < std::chrono::seconds{1}) {
      ++g.suppressed;
      return;
    }
    auto more =
        g.suppressed == 0
            ? std::string{}
            : fmt::format(" ({} more since the last report)", g.suppressed);
    spdlog::warn("link {}: dropped {} frame from {}: {}{}", cfg.name,
                 drop_names[k], printable(source), why, more);
    g = log_gate{now, 0, true};
  }

  void notify(const peer_rec& p, peer_state s, const std::string& reason) {
    auto level =
        s == peer_state::up ? spdlog::level::info : spdlog::level::warn;
    spdlog::log(level, "link {}: peer {} (incarnation {}) {}: {}", cfg.name,
                p.name, inc_str(p.inc), to_string(s), reason);
    if (!handlers.on_peer_state) {
      return;
    }
    try {
      handlers.on_peer_state(p.name, p.inc, s, reason);
    } catch (const std::exception& e) {
      spdlog::error("link {}: on_peer_state threw: {}", cfg.name, e.what());
    } catch (...) {
      spdlog::error("link {}: on_peer_state threw", cfg.name);
    }
  }

  void set_state(peer_rec& p, peer_state s, const std::string& reason) {
    {
      std::lock_guard<std::mutex> guard{peers_mtx};
      p.state = s;
      if (s == peer_state::down) {
        p.down_at = clock_type::now();
      }
    }
    schedule(p);
    notify(p, s, reason);
  }

  // -- sending ---------------------------------------------------------------

  // Encodes one envelope and hands it to ZeroMQ without blocking; `rid` is
  // the ROUTER identity on the hub. False when it could not be sent.
  bool transmit(const std::string* rid, std::string_view type, uint64_t to_inc,
                std::string_view body) {
    frame.clear();
    link_envelope env{type, cfg.name, inc, to_inc, ++seq, body};
    if (auto err = encode_envelope(env, cfg.secret, lim, frame)) {
      spdlog::error("link {}: {}", cfg.name, reason_of(err));
      return false;
    }
    auto size = frame.size();
    zmq::message_t msg;
    if (size <= copy_threshold) {
      msg.rebuild(frame.data(), size);
    } else {
      auto* owned = new std::string{std::move(frame)};
      frame = std::string{};
      msg.rebuild(
          owned->data(), size,
          [](void*, void* hint) { delete static_cast<std::string*>(hint); },
          owned);
    }
    try {
      // DEALER (with ZMQ_IMMEDIATE): EAGAIN while not connected (or at a
      // configured HWM). ROUTER (mandatory): EHOSTUNREACH when the member
      // is not connected (EAGAIN at a HWM). Either way the message is lost,
      // which the failure detector and the caller's protocol deal with.
      bool ok = true;
      if (rid != nullptr) {
        ok = sock.send(zmq::buffer(*rid),
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait)
                 .has_value();
      }
      if (ok) {
        ok = sock.send(msg, zmq::send_flags::dontwait).has_value();
      }
      if (!ok) {
        bump(st.send_failed);
        return false;
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) {
        throw;
      }
      bump(st.send_failed);
      spdlog::debug("link {}: send failed: {}", cfg.name, e.what());
      return false;
    }
    bump(st.bytes_sent, size);
    return true;
  }

  bool send_to(peer_rec& p, std::string_view type, std::string_view body) {
    bool ok = transmit(is_hub() ? &p.routing_id : nullptr, type, p.inc, body);
    if (ok) {
      p.last_sent = clock_type::now();
    }
    return ok;
  }

  void send_hello(time_point now) {
    std::string body;
    {
      std::lock_guard<std::mutex> guard{q_mtx};
      body = hello_body;
    }
    // Fails while not connected; the next one goes out an interval later.
    transmit(nullptr, t_hello, 0, body);
    last_hello_seq = seq;
    last_hello_at = now;
    hello_due = now + cfg.heartbeat_interval;
  }

  // Member: hello as soon as possible, but not more than twice an interval
  // however many frames prompt it.
  void hello_soon() {
    auto now = clock_type::now();
    hello_due = std::min(
        hello_due, std::max(now, last_hello_at + cfg.heartbeat_interval / 2));
  }

  void hub_lost(peer_rec& p, const std::string& reason) {
    set_state(p, peer_state::down, reason);
    // Whatever the hub sent meanwhile was dropped here, but a hub that was
    // frozen (rather than dead) still believes in our session and would
    // wait forever for answers to it. A new incarnation makes the hub end
    // that session (reporting it down, so its work is re-dispatched) when
    // we say hello again.
    inc = new_incarnation();
    hello_soon();
  }

  // -- receiving -------------------------------------------------------------

  void read_some() {
    for (int i = 0; i < max_reads_per_round; ++i) {
      parts.clear();
      do {
        zmq::message_t part;
        if (!sock.recv(part, zmq::recv_flags::dontwait)) {
          break;
        }
        parts.push_back(std::move(part));
      } while (parts.back().more());
      if (parts.empty()) {
        return;
      }
      handle_parts();
    }
  }

  void handle_parts() {
    for (auto& p : parts) {
      bump(st.bytes_received, p.size());
    }
    std::string rid;
    const zmq::message_t* body = &parts[0];
    if (is_hub()) {
      rid = parts[0].to_string();
      if (parts.size() != 2) {
        return drop(d_malformed, rid,
                    "expected one frame, got " +
                        std::to_string(parts.size() - 1));
      }
      body = &parts[1];
      msg_fd = source_fd(*body);
    } else if (parts.size() != 1) {
      return drop(d_malformed, "hub",
                  "expected one frame, got " + std::to_string(parts.size()));
    }
    link_fault fault = link_fault::none;
    auto env = decode_envelope(body->data<uint8_t>(), body->size(), cfg.secret,
                               lim, &fault);
    if (!env) {
      return drop(drop_kind_of(fault), is_hub() ? rid : "hub",
                  reason_of(env.error()));
    }
    if (is_hub()) {
      hub_receive(rid, *env);
    } else {
      member_receive(*env);
    }
  }

  // A message of a live session: liveness, then heartbeat or delivery.
  void accept(peer_rec& p, const link_envelope& e) {
    if (e.seq <= p.last_seq) {
      return drop(
          d_stale, p.name,
          fmt::format("seq {} not after {} (replayed?)", e.seq, p.last_seq));
    }
    bool was_suspect;
    {
      std::lock_guard<std::mutex> guard{peers_mtx};
      p.last_seq = e.seq;
      p.last_seen = clock_type::now();
      was_suspect = p.state == peer_state::suspect;
      if (was_suspect) {
        p.state = peer_state::up;
      }
    }
    if (is_hub()) {
      note_fd(p);
    }
    if (was_suspect) {
      notify(p, peer_state::up, "heard from again");
    }
    if (e.type == t_hb) {
      bump(st.heartbeats_received);
      if (!is_hub()) {
        learn_ivl(e.body);
        answer_hb(p);
      }
      return;
    }
    if (e.type.substr(0, reserved_prefix.size()) == reserved_prefix) {
      return; // a link message this version does not use here
    }
    bump(st.messages_received);
    if (!handlers.on_message) {
      return;
    }
    try {
      handlers.on_message(p.name, p.inc, e.type, e.body);
    } catch (const std::exception& ex) {
      spdlog::error("link {}: on_message threw: {}", cfg.name, ex.what());
    } catch (...) {
      spdlog::error("link {}: on_message threw", cfg.name);
    }
  }

  void hub_receive(const std::string& rid, const link_envelope& e) {
    if (e.to_inc != 0 && e.to_inc != inc) {
      drop(d_stale, e.from,
           "addressed to incarnation " + inc_str(e.to_inc) + ", ours is " +
               inc_str(inc));
      return maybe_rejoin(rid, e);
    }
    if (e.type == t_hello) {
      return hub_hello(rid, e);
    }
    auto it = peers.find(e.from);
    if (it == peers.end() || it->second.inc != e.inc ||
        it->second.state == peer_state::down) {
      drop(d_stale, e.from,
           it == peers.end() ? "no session (needs a hello)"
           : it->second.inc != e.inc
               ? "from incarnation " + inc_str(e.inc) + ", session is " +
                     inc_str(it->second.inc)
               : "node was declared down");
      return maybe_rejoin(rid, e);
    }
    accept(it->second, e);
  }

  // Tells a sender without a live session to hello, at most once an
  // interval per connection; not an older incarnation of a live session
  // (a zombie would only be refused again).
  void maybe_rejoin(const std::string& rid, const link_envelope& e) {
    if (auto it = peers.find(e.from); it != peers.end()) {
      const auto& p = it->second;
      if (p.state != peer_state::down && e.inc <= p.inc) {
        return;
      }
    }
    auto now = clock_type::now();
    auto& last = rejoin_sent[rid];
    if (last != time_point{} && now - last < cfg.heartbeat_interval) {
      return;
    }
    last = now;
    transmit(&rid, t_rejoin, e.inc, uint_body(e.seq));
  }

  void hub_hello(const std::string& rid, const link_envelope& e) {
    std::string reason = "joined";
    bool report = true;
    auto now = clock_type::now();
    auto it = peers.find(e.from);
    bool fresh = it == peers.end() || it->second.inc != e.inc ||
                 it->second.state == peer_state::down;
    if (it != peers.end()) {
      auto& p = it->second;
      bool live = p.state != peer_state::down;
      if (!live && now < p.held_until) {
        return drop(d_stale, e.from, held_back(p, now));
      }
      if (p.inc == e.inc) {
        if (e.seq <= p.last_seq) {
          return drop(d_stale, e.from, "replayed hello");
        }
        reason = live ? "hello again" : "rejoined after being declared down";
        // A member repeats its hello until the welcome reaches it; only a
        // change is news to the caller.
        report = p.state != peer_state::up || p.hello != e.body;
      } else if (live && e.inc < p.inc) {
        return drop(d_stale, e.from,
                    "hello from incarnation " + inc_str(e.inc) +
                        ", older than the live " + inc_str(p.inc) +
                        " (an old process, or two nodes with one name?)");
      } else if (live) {
        set_state(p, peer_state::down, restart_reason(p.inc, e.inc));
      }
    }
    {
      std::lock_guard<std::mutex> guard{peers_mtx};
      if (it == peers.end()) {
        it = peers.emplace(std::string{e.from}, peer_rec{}).first;
      }
      open_session(it->second, rid, e, now, fresh);
    }
    schedule(it->second);
    note_fd(it->second);
    rejoin_sent.erase(rid);
    if (send_to(it->second, t_welcome, ivl_body)) {
      it->second.told = ivl;
    }
    if (report) {
      notify(it->second, peer_state::up, reason);
    }
  }

  // Hub, under peers_mtx: `p` is (still) the session of hello `e`.
  void open_session(peer_rec& p, const std::string& rid, const link_envelope& e,
                    time_point now, bool fresh) {
    p.name = std::string{e.from};
    p.inc = e.inc;
    p.state = peer_state::up;
    p.last_seen = now;
    p.last_seq = e.seq;
    p.routing_id = rid;
    p.hello = std::string{e.body};
    if (fresh) {
      // A session that lasted, however it ended, was not a flap.
      if (p.down_at - p.up_since >=
          cfg.heartbeat_timeout * flap_window_timeouts) {
        p.flaps = 0;
      }
      p.up_since = now;
    }
  }

  std::string held_back(const peer_rec& p, time_point now) const {
    return fmt::format("hello held back {} ms more: {} short sessions in a "
                       "row ended with a closed connection",
                       ms_of(p.held_until - now), p.flaps);
  }

  void member_receive(const link_envelope& e) {
    if (e.to_inc != 0 && e.to_inc != inc) {
      return drop(d_stale, e.from,
                  "addressed to incarnation " + inc_str(e.to_inc) +
                      ", ours is " + inc_str(inc));
    }
    auto* cur = current_hub();
    bool same = cur != nullptr && cur->name == e.from && cur->inc == e.inc;
    bool live = cur != nullptr && cur->state != peer_state::down;
    if (e.type == t_welcome) {
      return member_welcome(e, cur, same);
    }
    if (e.type == t_rejoin) {
      uint64_t refused = 0;
      if (!parse_uint_body(e.body, refused)) {
        return drop(d_malformed, e.from, "link.rejoin without a seq");
      }
      // Refers to a message sent before our latest hello: answered already.
      if (refused < last_hello_seq) {
        return;
      }
      if (live) {
        hub_lost(*cur, same ? "declared down by the hub; rejoining"
                            : restart_reason(cur->inc, e.inc));
      }
      return hello_soon();
    }
    if (same && live) {
      return accept(*cur, e);
    }
    if (!live && cur != nullptr && cur->name == e.from && e.to_inc == inc &&
        e.type != t_welcome) {
      // The hub addresses our current incarnation, so it has accepted our
      // latest hello; its welcome went over another connection (ZeroMQ
      // keeps no order across a reconnect). Open the session as the
      // welcome would have, and take the message.
      member_welcome(e, cur, same);
      if (auto* p = current_hub(); p != nullptr && p->state == peer_state::up) {
        std::lock_guard<std::mutex> guard{peers_mtx};
        p->last_seq = e.seq - 1;
      }
      if (auto* p = current_hub(); p != nullptr) {
        return accept(*p, e);
      }
      return;
    }
    drop(d_stale, e.from, live ? "from another hub incarnation" : "not joined");
    if (live) {
      hub_lost(*cur, restart_reason(cur->inc, e.inc));
    }
    hello_soon();
  }

  void member_welcome(const link_envelope& e, peer_rec* cur, bool same) {
    if (same && e.seq <= cur->last_seq) {
      return drop(d_stale, e.from, "replayed welcome");
    }
    if (e.type == t_welcome) {
      learn_ivl(e.body);
    }
    // A close of the connection before this one must not end the session
    // this welcome opens: its event is read while the hub is not live.
    read_events();
    if (same && cur->state != peer_state::down) {
      // Several hellos were in flight; the session is open already.
      std::lock_guard<std::mutex> guard{peers_mtx};
      cur->last_seq = e.seq;
      cur->last_seen = clock_type::now();
      return;
    }
    if (cur != nullptr && !same && cur->state != peer_state::down) {
      set_state(*cur, peer_state::down, restart_reason(cur->inc, e.inc));
    }
    peer_rec* p;
    {
      std::lock_guard<std::mutex> guard{peers_mtx};
      if (cur != nullptr && cur->name != e.from) {
        peers.erase(std::string{cur->name}); // a hub under a new name
      }
      p = &peers[std::string{e.from}];
      p->name = std::string{e.from};
      p->inc = e.inc;
      p->state = peer_state::up;
      p->last_seen = clock_type::now();
      p->last_seq = e.seq;
      hub = p->name;
    }
    schedule(*p);
    notify(*p, peer_state::up, same ? "rejoined" : "joined");
  }

  // -- connections -----------------------------------------------------------

  // Reads the socket monitor's events. A closed connection queues the
  // session whose messages last came over it (member: the hub's) for
  // end_closed(). An accepted one means that the previous connection with
  // that fd number is gone without an event (ROUTER_HANDOVER ends an old
  // one itself), so the fd no longer names its session.
  void read_events() {
    for (;;) {
      zmq::message_t head;
      if (!mon.recv(head, zmq::recv_flags::dontwait)) {
        return;
      }
      if (head.more()) {
        zmq::message_t address; // ZeroMQ sends both frames at once
        [[maybe_unused]] auto r = mon.recv(address, zmq::recv_flags::dontwait);
      }
      uint16_t event = 0;
      int32_t value = 0; // the fd, or a failed handshake's error
      if (head.size() >= sizeof(event) + sizeof(value)) {
        std::memcpy(&event, head.data(), sizeof(event));
        std::memcpy(&value, head.data<char>() + sizeof(event), sizeof(value));
        on_event(event, value);
      }
    }
  }

  void on_event(uint16_t event, int32_t value) {
    if ((event & handshake_failed_events) != 0) {
      return on_handshake_failed(event, value);
    }
    if (!is_hub()) {
      if (event == ZMQ_EVENT_DISCONNECTED && hub_live()) {
        closed.push_back({hub, current_hub()->inc});
      }
      return;
    }
    int fd = value;
    track_handshake(event, fd);
    auto it = fd_owners.find(fd);
    if (it == fd_owners.end()) {
      return;
    }
    if (event == ZMQ_EVENT_DISCONNECTED) {
      closed.push_back(std::move(it->second));
    }
    fd_owners.erase(it);
  }

  // A failed handshake: counted and logged (node_link.hpp, "Failed
  // handshakes"). A member's event names the hub's endpoint; a hub's names
  // only its own, so the hub reports at the DISCONNECTED that libzmq emits
  // right after, from the same (single) I/O thread, with the connection's
  // fd.
  void on_handshake_failed(uint16_t event, int32_t value) {
    bump(st.handshake_failures);
    if (is_hub()) {
      failed_handshake = std::pair{event, value};
      return;
    }
    report_handshake(event, value, "the head at " + cfg.endpoint);
  }

  // Hub: which host each connection came from, read when it is accepted
  // (a connection that failed its handshake may be closed by the time the
  // failure is read), and the failed handshake its close completes.
  void track_handshake(uint16_t event, int fd) {
    if (event == ZMQ_EVENT_ACCEPTED) {
      accepted_from[fd] = peer_host(fd);
      return;
    }
    if (event != ZMQ_EVENT_DISCONNECTED) {
      return;
    }
    auto it = accepted_from.find(fd);
    std::string host = it == accepted_from.end() ? "" : std::move(it->second);
    if (it != accepted_from.end()) {
      accepted_from.erase(it);
    }
    if (auto failed = std::exchange(failed_handshake, std::nullopt)) {
      // The ZAP handler logged a refused key already, with the key.
      if (failed->first != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        report_handshake(failed->first, failed->second,
                         "a node at " +
                             (host.empty() ? "an unknown address" : host));
      }
    }
  }

  // Logs the first failure with `peer`, then at most one line per
  // handshake_log_every with the number of failures since the last.
  void report_handshake(uint16_t event, int32_t value,
                        const std::string& peer) {
    if (handshake_gates.size() >= max_handshake_gates &&
        !handshake_gates.contains(peer)) {
      handshake_gates.clear();
    }
    auto& g = handshake_gates[peer];
    auto now = clock_type::now();
    if (g.used && now - g.last < handshake_log_every) {
      ++g.suppressed;
      return;
    }
    std::string again;
    if (g.suppressed > 0) {
      again = fmt::format(" ({} more since the last report)", g.suppressed);
    }
    spdlog::warn("link {}: handshake with {} failed ({}), so {} node cannot "
                 "join{}; probable cause: {}",
                 cfg.name, peer, handshake_detail(event, value),
                 is_hub() ? "that" : "this", again, handshake_cause(event));
    g = log_gate{now, 0, true};
  }

  // Hub: `p`'s latest message came over connection msg_fd. The events not
  // read yet may be about an earlier connection with the same fd number
  // (its close is reported before the fd is reused): they are read first,
  // so that a close is never blamed on the fd's next owner.
  void note_fd(const peer_rec& p) {
    if (msg_fd < 0) {
      return;
    }
    auto it = fd_owners.find(msg_fd);
    if (it != fd_owners.end() && it->second.inc == p.inc &&
        it->second.name == p.name) {
      return;
    }
    read_events();
    fd_owners[msg_fd] = {p.name, p.inc};
  }

  // Ends the sessions whose connection closed, at once rather than after
  // the heartbeat timeout, with the same report (so that callers re-run
  // what was in flight there). What a peer sent before the close was
  // queued before the event: it is read, and delivered, first.
  void end_closed() {
    if (closed.empty()) {
      return;
    }
    read_some();
    auto gone = std::move(closed);
    closed.clear();
    auto now = clock_type::now();
    for (auto& c : gone) {
      auto it = peers.find(c.name);
      if (it == peers.end() || it->second.inc != c.inc ||
          it->second.state == peer_state::down) {
        continue; // ended already, or replaced by a new session
      }
      auto& p = it->second;
      auto heard = ms_of(now - p.last_seen);
      if (!is_hub()) {
        hub_lost(p, fmt::format("connection to the hub closed (last heard "
                                "{} ms ago)",
                                heard));
        continue;
      }
      damp(p, now);
      set_state(p, peer_state::down,
                fmt::format("connection closed: process gone or connection "
                            "reset (last heard {} ms ago)",
                            heard));
    }
  }

  // Hub: a member whose sessions keep ending with a closed connection (a
  // flapping network, a crash loop) is welcomed again only after a hold
  // that doubles with each short session, so that work is not sent to it
  // and re-dispatched over and over.
  void damp(peer_rec& p, time_point now) {
    auto t = cfg.heartbeat_timeout;
    std::lock_guard<std::mutex> guard{peers_mtx};
    p.flaps = now - p.up_since >= t * flap_window_timeouts ? 1 : p.flaps + 1;
    if (p.flaps < 2) {
      p.held_until = time_point{};
      return;
    }
    auto doublings = std::min<uint32_t>(p.flaps - 2, 5);
    p.held_until = now + std::min(t * (1 << doublings), t * max_hold_timeouts);
  }

  // Member: a hub silent for the timeout may be behind a dead TCP connection
  // (a vanished host sends no FIN), which ZeroMQ would keep until a ZMTP
  // ping failed, and those are rare. The next hello goes over a fresh one,
  // under the new incarnation's identity; the hub ends the old session
  // either way.
  void reconnect() {
    try {
      sock.disconnect(cfg.endpoint);
      sock.set(zmq::sockopt::routing_id, cfg.name + "/" + inc_str(inc));
      sock.connect(cfg.endpoint);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) {
        throw;
      }
      spdlog::warn("link {}: reconnecting to {}: {}", cfg.name, cfg.endpoint,
                   e.what());
    }
  }

  // -- timers ----------------------------------------------------------------

  void tick(time_point now) {
    // Read what is waiting before judging silence: after a stall (a paused
    // process, a slow callback) the peers' messages are sitting there.
    if (sock.get(zmq::sockopt::events) & ZMQ_POLLIN) {
      read_some();
    }
    // Ticks come at most an interval apart (the poll timeout). A longer gap
    // is a stall of this process, and what peers sent meanwhile may still
    // be in kernel buffers that ZeroMQ's I/O thread has not read yet: the
    // stall is not counted as their silence.
    if (last_tick != time_point{} && now - last_tick > 2 * ivl) {
      auto stall = now - last_tick - ivl;
      std::lock_guard<std::mutex> guard{peers_mtx};
      for (auto& [name, p] : peers) {
        if (p.state != peer_state::down) {
          p.last_seen = std::min(now, p.last_seen + stall);
        }
      }
    }
    last_tick = now;
    if (now >= next_hb) {
      heartbeat(now);
    }
    detect(now);
    if (!is_hub() && !hub_live() && now >= hello_due) {
      send_hello(now);
    }
  }

  // Every interval: a heartbeat to each live peer that was sent nothing
  // else during the last half interval or (hub) was not told the interval
  // in force; then the hub fits the interval to its number of members.
  void heartbeat(time_point now) {
    size_t live = 0;
    for (auto& [name, p] : peers) {
      if (p.state == peer_state::down) {
        continue;
      }
      ++live;
      bool retell = is_hub() && p.told != ivl;
      if ((retell || now - p.last_sent >= ivl / 2) &&
          send_to(p, t_hb, is_hub() ? ivl_body : std::string_view{})) {
        p.told = ivl;
        bump(st.heartbeats_sent);
      }
    }
    std::erase_if(rejoin_sent, [&](const auto& kv) {
      return now - kv.second >= cfg.heartbeat_interval;
    });
    next_hb += ivl;
    if (next_hb <= now) {
      next_hb = now + ivl;
    }
    if (!is_hub()) {
      return;
    }
    if (prev_ivl_until != time_point{} && now >= prev_ivl_until) {
      prev_ivl_until = time_point{};
      rescale(now);
    }
    set_ivl(ivl_for(live), now);
  }

  milliseconds max_ivl() const {
    return std::max(cfg.heartbeat_interval,
                    cfg.heartbeat_timeout / min_beats_per_timeout);
  }

  // Hub: the interval at which `members` members cost it at most
  // hub_heartbeat_rate heartbeats a second each way, within bounds.
  milliseconds ivl_for(size_t members) const {
    uint64_t rate = cfg.hub_heartbeat_rate;
    if (rate == 0) {
      return cfg.heartbeat_interval;
    }
    milliseconds want{static_cast<int64_t>((members * 1000 + rate - 1) / rate)};
    want = (want + interval_step - milliseconds{1}) / interval_step *
           interval_step;
    return std::clamp(want, cfg.heartbeat_interval, max_ivl());
  }

  // Member: the hub's heartbeat is answered at once rather than at a phase
  // of our own, so that all members heartbeat right after the hub's round,
  // which the hub then reads in a few wake-ups instead of one per member
  // (on a VM, a wake-up costs more than the message). Our own timer is put
  // off: it fires only when the hub's heartbeats stop coming (it sent
  // other messages instead, or it is gone).
  void answer_hb(peer_rec& p) {
    auto now = clock_type::now();
    if (now - p.last_sent >= ivl / 2 && send_to(p, t_hb, {})) {
      bump(st.heartbeats_sent);
    }
    next_hb = now + ivl + ivl / 4;
  }

  // Member: the interval the hub announced with a welcome or a heartbeat;
  // a hub that announces none (an older version) gets the configured one.
  void learn_ivl(std::string_view body) {
    uint64_t ms = 0;
    auto want = cfg.heartbeat_interval;
    if (parse_uint_body(body, ms)) {
      auto capped = static_cast<int64_t>(std::min<uint64_t>(ms, 1u << 30));
      want =
          std::clamp(milliseconds{capped}, cfg.heartbeat_interval, max_ivl());
    }
    set_ivl(want, clock_type::now());
  }

  void set_ivl(milliseconds next, time_point now) {
    if (next == ivl) {
      return;
    }
    if (is_hub() && next < ivl) {
      prev_ivl = ivl;
      prev_ivl_until = now + cfg.heartbeat_timeout;
    }
    ivl = next;
    ivl_body = uint_body(static_cast<uint64_t>(ivl.count()));
    rescale(now);
    next_hb = std::min(next_hb, now + ivl);
  }

  // A peer is suspect after as many intervals as configured (suspect_after
  // / heartbeat_interval) of the longest interval it may be using. The
  // threshold may have shrunk, so the next detect() scans every peer.
  void rescale(time_point now) {
    auto widest = now < prev_ivl_until ? std::max(ivl, prev_ivl) : ivl;
    auto scaled =
        cfg.suspect_after * widest.count() / cfg.heartbeat_interval.count();
    suspect_span =
        std::min<clock_type::duration>(scaled, cfg.heartbeat_timeout);
    detect_due = time_point{};
  }

  // When a peer's timer (suspect, down, forget) is next due, or earlier.
  time_point deadline_of(const peer_rec& p) const {
    switch (p.state) {
    case peer_state::up:
      return p.last_seen + suspect_span;
    case peer_state::suspect:
      return p.last_seen + cfg.heartbeat_timeout;
    case peer_state::down:
      break;
    }
    return is_hub() ? p.down_at + cfg.forget_after : time_point::max();
  }

  // A peer's timer may now be due before the next scan: a new session, a
  // state change.
  void schedule(const peer_rec& p) {
    detect_due = std::min(detect_due, deadline_of(p));
  }

  // Scans the peers only once one of them is due: a hub hears from every
  // member every interval, and a scan on every read would cost O(members)
  // per message. Deadlines only move later (messages, stalls), so the
  // earliest one of the last scan is never late.
  void detect(time_point now) {
    if (now < detect_due) {
      return;
    }
    detect_due = time_point::max();
    std::vector<std::string> forget;
    for (auto& [name, p] : peers) {
      auto age = now - p.last_seen;
      auto silent = [&] {
        return "no heartbeat for " + std::to_string(ms_of(age)) + " ms";
      };
      if (p.state == peer_state::down) {
        if (is_hub() && now - p.down_at >= cfg.forget_after) {
          forget.push_back(name);
          continue;
        }
      } else if (age >= cfg.heartbeat_timeout) {
        if (is_hub()) {
          set_state(p, peer_state::down, silent());
        } else {
          hub_lost(p, silent());
          reconnect();
        }
      } else if (p.state == peer_state::up && age >= suspect_span) {
        set_state(p, peer_state::suspect, silent());
      }
      schedule(p);
    }
    if (!forget.empty()) {
      std::lock_guard<std::mutex> guard{peers_mtx};
      for (auto& n : forget) {
        peers.erase(n);
      }
    }
  }

  time_point next_deadline() const {
    auto d = std::min(next_hb, detect_due);
    if (!is_hub() && !hub_live()) {
      d = std::min(d, hello_due);
    }
    return d;
  }

  // -- the loop --------------------------------------------------------------

  void send_queued(command& c) {
    peer_rec* p = nullptr;
    if (!is_hub()) {
      p = current_hub();
    } else if (auto it = peers.find(c.peer); it != peers.end()) {
      p = &it->second;
    }
    if (p == nullptr || p->state == peer_state::down) {
      bump(st.send_failed);
      spdlog::debug("link {}: {} to {} dropped: peer down", cfg.name, c.type,
                    c.peer);
      return;
    }
    if (send_to(*p, c.type, c.body)) {
      bump(st.messages_sent);
      return;
    }
    // ZeroMQ had no connection for it (a reconnect after a stall, a
    // half-dead peer). The session cannot be trusted to carry what the
    // caller sent: end it, so that callers re-run what it held (their
    // peer-down handling) instead of waiting for answers that will never
    // come. The peer then joins again with a new session.
    auto reason = std::string{"message lost: "} + std::string{c.type} + " to " +
                  p->name + " could not be sent";
    if (is_hub()) {
      set_state(*p, peer_state::down, reason);
    } else {
      hub_lost(*p, reason);
    }
  }

  // False when the link is stopping.
  bool drain_queue() {
    uint64_t n;
    [[maybe_unused]] auto r = ::read(wake_fd, &n, sizeof(n));
    {
      std::lock_guard<std::mutex> guard{q_mtx};
      batch.swap(queue);
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].what == command::kind::send) {
        send_queued(batch[i]);
        continue;
      }
      std::unique_lock<std::mutex> lock{q_mtx};
      if (q_cv.wait_for(lock, batch[i].pause, [&] { return closing; })) {
        batch.clear();
        return false;
      }
      // Like a process that resumes, first send what was in hand: the
      // messages queued during the pause go out before anything is read.
      std::move(queue.begin(), queue.end(), std::back_inserter(batch));
      queue.clear();
    }
    batch.clear();
    return true;
  }

  void run() {
    link_tid = std::this_thread::get_id();
    zmq::pollitem_t items[] = {
        {static_cast<void*>(sock), 0, ZMQ_POLLIN, 0},
        {nullptr, wake_fd, ZMQ_POLLIN, 0},
        {nullptr, stop_fd, ZMQ_POLLIN, 0},
        {static_cast<void*>(mon), 0, ZMQ_POLLIN, 0},
    };
    next_hb = hello_due = clock_type::now();
    ivl = cfg.heartbeat_interval;
    ivl_body = uint_body(static_cast<uint64_t>(ivl.count()));
    suspect_span = cfg.suspect_after;
    for (;;) {
      try {
        auto wait = std::chrono::ceil<milliseconds>(next_deadline() -
                                                    clock_type::now());
        zmq::poll(items, 4, std::max(wait, milliseconds{0}));
        if (items[2].revents & ZMQ_POLLIN) {
          return;
        }
        if (items[3].revents & ZMQ_POLLIN) {
          read_events();
        }
        if (items[0].revents & ZMQ_POLLIN) {
          read_some();
        }
        end_closed();
        if ((items[1].revents & ZMQ_POLLIN) && !drain_queue()) {
          return;
        }
        tick(clock_type::now());
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) {
          return;
        }
        spdlog::error("link {}: {}", cfg.name, e.what());
      } catch (const std::bad_alloc&) {
        spdlog::error("link {}: out of memory; frame dropped", cfg.name);
      }
    }
  }

  std::unique_ptr<zap_handler> zap;

  // The hub's ZAP verdict: only the allowed member keys get a session.
  zap_verdict authorize(const zap_request& req) {
    zap_verdict v;
    auto& allowed = cfg.curve.allowed;
    v.ok = req.curve && std::find(allowed.begin(), allowed.end(),
                                  req.public_key) != allowed.end();
    if (!v.ok) {
      bump(st.refused_keys);
      static std::atomic<int64_t> last_log{0};
      auto now = clock_type::now().time_since_epoch() / milliseconds{1};
      if (now - last_log.exchange(now) >= 1000) {
        spdlog::warn("link {}: refused a node key not in the accepted list "
                     "(public key {}, from {})",
                     cfg.name, req.curve ? z85_of(req.public_key) : "-",
                     req.address);
      }
    }
    return v;
  }

  // CurveZMQ keys on the socket, before it binds or connects.
  caf::error set_curve() {
    auto key = [](const curve_key& k) {
      return zmq::const_buffer{k.data(), k.size()};
    };
    if (is_hub()) {
      auto h = zap_handler::start(
          ctx, [this](const zap_request& r) { return authorize(r); }, {},
          milliseconds{1000});
      if (!h) {
        return h.error();
      }
      zap = std::move(*h);
      sock.set(zmq::sockopt::curve_server, 1);
      sock.set(zmq::sockopt::curve_secretkey, key(cfg.curve.own.secret_key));
      sock.set(zmq::sockopt::zap_domain, "shoal.link");
    } else {
      sock.set(zmq::sockopt::curve_serverkey, key(cfg.curve.hub_public_key));
      sock.set(zmq::sockopt::curve_publickey, key(cfg.curve.own.public_key));
      sock.set(zmq::sockopt::curve_secretkey, key(cfg.curve.own.secret_key));
    }
    return {};
  }

  // The events of the socket's connections, before it binds or connects so
  // that none is missed: on the hub which connections are accepted and
  // closed, on a member when its connection to the hub closes, and on both
  // the handshakes that fail.
  caf::error start_monitor() {
    int events = ZMQ_EVENT_DISCONNECTED | handshake_failed_events;
    if (is_hub()) {
      events |= ZMQ_EVENT_ACCEPTED;
    }
    if (zmq_socket_monitor(sock.handle(), monitor_endpoint, events) != 0) {
      return make_error(errc::io_error,
                        std::string{"node link: socket monitor: "} +
                            zmq_strerror(zmq_errno()));
    }
    mon = zmq::socket_t{ctx, zmq::socket_type::pair};
    mon.set(zmq::sockopt::linger, 0);
    mon.set(zmq::sockopt::rcvhwm, 0);
    mon.connect(monitor_endpoint);
    return {};
  }

  caf::error open() {
    auto ms = [](milliseconds d) { return static_cast<int>(d.count()); };
    try {
      ctx = zmq::context_t{1};
      sock = zmq::socket_t{ctx, is_hub() ? zmq::socket_type::router
                                         : zmq::socket_type::dealer};
      sock.set(zmq::sockopt::linger, 0);
      sock.set(zmq::sockopt::sndhwm, cfg.sndhwm);
      sock.set(zmq::sockopt::rcvhwm, cfg.rcvhwm);
      sock.set(zmq::sockopt::maxmsgsize,
               static_cast<int64_t>(cfg.max_frame_bytes));
      // ZMTP pings drop dead TCP connections (a vanished host sends no
      // FIN). They are not the failure detector, and each is a CURVE
      // message both ways per member for the hub, at a phase of its own
      // (a wake-up of its I/O thread); libzmq also cancels a ping's timer
      // with a scan of every timer of its I/O thread. So they are rare: a
      // member reconnects by itself when its hub goes silent (reconnect()),
      // and the hub's only free the connections of members that vanished,
      // which it declared down long before and no longer sends to.
      sock.set(zmq::sockopt::heartbeat_ivl,
               ms(cfg.heartbeat_timeout * ping_timeouts));
      sock.set(zmq::sockopt::heartbeat_timeout, ms(cfg.heartbeat_timeout));
      if (cfg.curve.enabled) {
        if (auto err = set_curve()) {
          return err;
        }
      }
      if (auto err = start_monitor()) {
        return err;
      }
      if (is_hub()) {
        // A member that reconnects (same identity) takes over its old
        // connection, and sends to a gone member fail instead of vanishing.
        sock.set(zmq::sockopt::router_handover, 1);
        sock.set(zmq::sockopt::router_mandatory, 1);
        sock.bind(cfg.endpoint);
        bound = sock.get(zmq::sockopt::last_endpoint);
      } else {
        // The incarnation in the identity keeps a restarted member from
        // colliding with its predecessor's connection on the hub.
        sock.set(zmq::sockopt::routing_id, cfg.name + "/" + inc_str(inc));
        sock.set(zmq::sockopt::immediate, 1);
        sock.set(zmq::sockopt::reconnect_ivl,
                 std::min(100, ms(cfg.heartbeat_interval)));
        sock.set(zmq::sockopt::reconnect_ivl_max, 1000);
        sock.connect(cfg.endpoint);
        bound = cfg.endpoint;
      }
    } catch (const zmq::error_t& e) {
      return make_error(errc::io_error, std::string{"node link: cannot "} +
                                            (is_hub() ? "bind " : "connect ") +
                                            cfg.endpoint + ": " + e.what());
    }
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd < 0 || stop_fd < 0) {
      return make_error(errc::io_error,
                        std::string{"eventfd: "} + std::strerror(errno));
    }
    return {};
  }

  void close_all() {
    if (sock.handle() != nullptr && mon.handle() != nullptr) {
      zmq_socket_monitor(sock.handle(), nullptr, 0);
    }
    mon.close();
    sock.close();
    if (zap) {
      zap->stop();
    }
    ctx.close();
    for (int* fd : {&wake_fd, &stop_fd}) {
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    }
  }
};

node_link::node_link() : impl_(std::make_unique<impl>()) {
  // nop
}

node_link::~node_link() {
  stop();
}

caf::expected<std::unique_ptr<node_link>>
node_link::start(node_link_config cfg, link_handlers handlers) {
  if (auto err = validate(cfg)) {
    return err;
  }
  if (sodium_init() < 0) {
    return make_error(errc::internal, "libsodium initialisation failed");
  }
  std::unique_ptr<node_link> link{new node_link};
  auto& d = *link->impl_;
  d.cfg = std::move(cfg);
  d.handlers = std::move(handlers);
  d.inc = d.cfg.incarnation != 0 ? d.cfg.incarnation : new_incarnation();
  d.lim.max_frame_bytes = d.cfg.max_frame_bytes;
  d.hello_body = d.cfg.hello;
  if (auto err = d.open()) {
    d.close_all();
    return err;
  }
  // The socket moves to the link thread here; thread creation is the full
  // barrier ZeroMQ asks for when a socket changes threads.
  d.thread = std::thread{[&d] { d.run(); }};
  return link;
}

caf::error node_link::send(const std::string& peer, std::string_view type,
                           std::string body) {
  auto& d = *impl_;
  if (type.empty() || type.size() > link_max_type_bytes) {
    return make_error(errc::invalid_argument,
                      "message type must have 1..64 bytes");
  }
  if (type.substr(0, reserved_prefix.size()) == reserved_prefix) {
    return make_error(errc::invalid_argument,
                      "message type '" + printable(type) +
                          "' uses the reserved prefix link.");
  }
  if (body.size() > d.lim.max_body_bytes()) {
    return make_error(errc::invalid_argument,
                      "body of " + std::to_string(body.size()) +
                          " bytes exceeds the link limit of " +
                          std::to_string(d.lim.max_body_bytes()));
  }
  {
    std::lock_guard<std::mutex> guard{d.q_mtx};
    if (d.closing) {
      return make_error(errc::unavailable, "node link stopped");
    }
  }
  {
    std::lock_guard<std::mutex> guard{d.peers_mtx};
    if (d.is_hub()) {
      auto it = d.peers.find(peer);
      if (it == d.peers.end()) {
        return make_error(errc::not_found, "no node named '" + printable(peer) +
                                               "' on this link");
      }
      if (it->second.state == peer_state::down) {
        return make_error(errc::unavailable, "node " + peer + " is down");
      }
    } else {
      if (!peer.empty() && !d.hub.empty() && peer != d.hub) {
        return make_error(errc::not_found, "'" + printable(peer) +
                                               "' is not the hub (" + d.hub +
                                               ")");
      }
      auto it = d.peers.find(d.hub);
      if (d.hub.empty() || it == d.peers.end() ||
          it->second.state == peer_state::down) {
        return make_error(errc::unavailable, "not joined to the hub");
      }
    }
  }
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{d.q_mtx};
    if (d.closing) {
      return make_error(errc::unavailable, "node link stopped");
    }
    if (d.queue.size() >= max_queued) {
      return make_error(errc::resource_exhausted, "node link queue full");
    }
    was_empty = d.queue.empty();
    d.queue.push_back(
        {command::kind::send, peer, std::string{type}, std::move(body), {}});
  }
  if (was_empty) {
    uint64_t one = 1;
    // EAGAIN only means the counter is already non-zero: it is awake.
    [[maybe_unused]] auto n = ::write(d.wake_fd, &one, sizeof(one));
  }
  return {};
}

caf::error node_link::set_hello(std::string body) {
  auto& d = *impl_;
  if (body.size() > d.lim.max_body_bytes()) {
    return make_error(errc::invalid_argument, "hello body over the limit");
  }
  std::lock_guard<std::mutex> guard{d.q_mtx};
  d.hello_body = std::move(body);
  return {};
}

std::vector<peer_info> node_link::peers() const {
  auto& d = *impl_;
  auto now = clock_type::now();
  std::vector<peer_info> out;
  std::lock_guard<std::mutex> guard{d.peers_mtx};
  out.reserve(d.peers.size());
  for (const auto& [name, p] : d.peers) {
    out.push_back({p.name, p.inc, p.state,
                   std::chrono::duration_cast<milliseconds>(now - p.last_seen),
                   p.hello});
  }
  return out;
}

std::optional<peer_info> node_link::peer(std::string_view name) const {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.peers_mtx};
  auto it = d.peers.find(name);
  if (it == d.peers.end()) {
    return std::nullopt;
  }
  const auto& p = it->second;
  return peer_info{
      p.name, p.inc, p.state,
      std::chrono::duration_cast<milliseconds>(clock_type::now() - p.last_seen),
      p.hello};
}

link_stats node_link::stats() const {
  const auto& c = impl_->st;
  auto get = [](const std::atomic<uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  return {get(c.messages_sent),     get(c.messages_received),
          get(c.bytes_sent),        get(c.bytes_received),
          get(c.heartbeats_sent),   get(c.heartbeats_received),
          get(c.dropped_malformed), get(c.dropped_unauthenticated),
          get(c.dropped_stale),     get(c.send_failed),
          get(c.refused_keys),      get(c.handshake_failures)};
}

const std::string& node_link::endpoint() const noexcept {
  return impl_->bound;
}

const std::string& node_link::name() const noexcept {
  return impl_->cfg.name;
}

uint64_t node_link::incarnation() const noexcept {
  return impl_->inc;
}

void node_link::pause_for_test(std::chrono::milliseconds d) {
  auto& i = *impl_;
  bool was_empty;
  {
    std::lock_guard<std::mutex> guard{i.q_mtx};
    if (i.closing) {
      return;
    }
    was_empty = i.queue.empty();
    i.queue.push_back({command::kind::pause, {}, {}, {}, d});
  }
  if (was_empty) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(i.wake_fd, &one, sizeof(one));
  }
}

void node_link::stop() {
  auto& d = *impl_;
  auto signal = [&d] {
    {
      std::lock_guard<std::mutex> guard{d.q_mtx};
      d.closing = true;
      d.queue.clear();
    }
    d.q_cv.notify_all();
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(d.stop_fd, &one, sizeof(one));
  };
  // From a callback (documented as not allowed): the thread cannot join
  // itself, so only ask it to end; the destructor joins.
  if (d.link_tid.load() == std::this_thread::get_id()) {
    signal();
    return;
  }
  std::lock_guard<std::mutex> guard{d.stop_mtx};
  if (d.stopped || !d.thread.joinable()) {
    return;
  }
  d.stopped = true;
  signal();
  d.thread.join();
  d.close_all();
}

} // namespace shoal
