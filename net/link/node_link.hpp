// node_link: the node-to-node transport of a cluster. A star: the head node
// runs a hub (ROUTER, bound), every worker a member (DEALER, connected to
// the hub). One background thread per link owns its socket; the API below
// may be called from any thread.
//
// Frames are link envelopes (net/link_envelope.hpp): MessagePack, HMAC-
// SHA256 under the cluster secret (empty secret: no authentication).
// With CURVE keys (config.curve) the connection itself is encrypted and
// authenticated: the hub is a CURVE server whose ZAP handler accepts only
// the member keys it was given, so an outside key gets no session at all,
// and nothing of the envelopes (model names, tensors) crosses in clear.
//
// Protocol. Types starting with "link." are reserved for the link itself:
//  - link.hello   member -> hub. Body: the member's hello (registration
//                 info, opaque, set with config.hello / set_hello). Sent
//                 every heartbeat_interval until welcomed, with to_inc 0.
//  - link.welcome hub -> member, answers a hello. Body: the heartbeat
//                 interval in ms (see "Heartbeat cadence"), as the msgpack
//                 uint64 0xcf form; a member ignores any other. It opens a
//                 session: (member name, member inc) x (hub inc). A member
//                 also takes any hub message addressed to its current
//                 incarnation as the welcome: after a reconnect the welcome
//                 may come over the old connection, or never.
//  - link.hb      both ways, to every live peer that was sent nothing else
//                 during the last half interval. The hub's carries the
//                 interval as the welcome does (also sent to a member that
//                 was not told the current one yet); a member's is empty.
//  - link.rejoin  hub -> member, answers a non-hello message that belongs
//                 to no live session (the hub restarted, or declared the
//                 member down). Body: the msgpack uint64 (0xcf form) `seq`
//                 of the refused message. The member re-hellos, unless it
//                 already sent a hello after that message.
//
// Incarnations. Each link has one (config.incarnation, or new_incarnation():
// start time in ms << 20 | 20 random bits, increasing within a process), so
// a restarted node has a larger one than before. The hub accepts a hello
//  - from an unknown name, or with the session's incarnation (re-hello; a
//    member that was declared down comes back up this way);
//  - with another incarnation: the old one is reported down with reason
//    "node restarted or lost its session (incarnation X -> Y)" (unless it
//    already was), then the new one up; except that while the old session is
//    alive a hello from a smaller incarnation is dropped (a zombie of an old
//    process).
// Every other message is accepted only from a live session: its `inc` is
// the session's, its `to_inc` is 0 or our own, and its `seq` is larger than
// the last one accepted from that session (no replays). Everything else is
// dropped and counted as stale: notably whatever a member sent before the
// hub declared it down, even when it arrives after, so a result from a node
// presumed dead is never delivered; the member must re-hello first.
// Members do not order hub incarnations: a hub is whatever answers at the
// endpoint, and a different incarnation there means it restarted.
// A member that declares its hub down (or is told to rejoin) takes a new
// incarnation for its next hello: what the hub sent meanwhile was dropped,
// so a hub that was only frozen must end the old session (reporting it
// down, which re-dispatches its work) instead of waiting for answers.
//
// Failure detector (both roles, per peer): any accepted message counts as
// liveness. Silent for more than suspect_after -> suspect; for more than
// heartbeat_timeout -> down, reason "no heartbeat for N ms". Deadlines are
// exact (the poll timeout is the next one), so a down is reported within
// timeout + a few ms of the last message. A stall of the link's own
// process (SIGSTOP, a blocking callback: the thread ticks late) is not
// counted as the peers' silence. A member whose hub went down keeps sending
// hellos every interval. A member told to rejoin reports the hub down
// ("declared down by the hub") and up again once re-welcomed. Defaults:
// heartbeats every 100 ms, suspect after 300 ms, down after 1 s.
//
// Heartbeat cadence. Each heartbeat costs the hub a message (and a CURVE
// box and a syscall) per member each way, so the hub bounds their number:
// with more members than hub_heartbeat_rate x heartbeat_interval it
// lengthens the interval (in 10 ms steps) to what keeps it at about
// hub_heartbeat_rate heartbeats a second each way, up to heartbeat_timeout
// / 4, so that a peer is declared down only after at least three
// heartbeats in a row failed to arrive. The hub announces its interval
// in welcomes and heartbeats; a member heartbeats at the interval it was
// told (within heartbeat_interval .. heartbeat_timeout / 4; the configured
// one with a hub that announces none), and answers each of the hub's
// heartbeats at once (unless it sent something during the last half
// interval) instead of at a phase of its own: the hub sends its round in
// one go, and reads the answers in a few wake-ups instead of one per
// member. The member's own timer only fires when the hub's heartbeats
// stop coming for 1.25 intervals. Both sides keep the configured
// number of intervals before suspect: suspect after suspect_after x
// (interval / heartbeat_interval), at most heartbeat_timeout. The timeout
// itself never changes, so a silent peer is down heartbeat_timeout after
// its last message, whatever the interval. When the hub shortens it, it
// allows for the longer one for another heartbeat_timeout, while the
// members learn the new one.
// A member whose hub is silent for heartbeat_timeout also drops its
// connection and connects again (under its new incarnation), so that a dead
// TCP connection (a vanished host sends no FIN) does not keep it from a hub
// that came back; ZeroMQ reconnects every 100 ms or less, backing off to
// 1 s. ZeroMQ's own ZMTP heartbeats (a ping every 10 heartbeat timeouts,
// timing out after one) are the backstop for connections that die
// otherwise; they are not the failure detector, so they are sparse: each
// is a message both ways per member on the hub.
//
// Closed connections. A process that dies (SIGKILL, a crash) has its TCP
// connection closed by the kernel, which the link sees at once through
// ZeroMQ's socket monitor; it does not wait for the timeout. The hub learns
// which session each connection carries from the messages it accepts
// (ZMQ_SRCFD, the connection's fd; ROUTER_NOTIFY is a draft API Debian's
// libzmq lacks), and when a connection closes it reports that session
// down, reason "connection closed: ...", after delivering what was read
// before the close. A member whose hub connection closes treats it as a
// hub timeout (new incarnation, hello). The session is over either way: a
// member that reconnects must hello again (its old session's messages get
// link.rejoin), as after any down. A freeze or a network cut closes
// nothing, so heartbeats still catch those.
// Flapping: a session that ended with a closed connection less than
// 10 x heartbeat_timeout after it opened counts as short. After the second
// short session in a row the hub holds the member's hellos back (no
// welcome, so no new work for it) for heartbeat_timeout, doubling with
// each further one up to 30 x heartbeat_timeout; a session that lasts the
// 10 timeouts starts the count again. So the first crash or reset costs
// nothing, and a flapping or crash-looping member is tried ever less often
// instead of having work re-dispatched off it on every flap.
//
// Failed handshakes. A peer with another cluster secret (so other CURVE
// keys), or without one where this side has one, fails the CURVE or ZMTP
// handshake before any frame or ZAP check: nothing else would ever say so.
// Both roles watch for it with the socket monitor, count it
// (handshake_failures) and log a warning naming the peer (the member: the
// hub's endpoint; the hub: the member's host, or "an unknown address" when
// the connection was closed before the link thread could read it: libzmq
// names only the hub's own endpoint) and the probable cause: the
// first failure from a peer, then at most one line per 10 s with the
// number since the last. The hub leaves a refused key to the ZAP handler's
// own line ("refused a node key").
//
// Bad input: malformed, unauthenticated, wrong-version and oversized frames
// are dropped, counted, and logged (warn) at most once per second per
// reason, with the number suppressed in between. Frames over
// max_frame_bytes are refused by ZeroMQ itself (ZMQ_MAXMSGSIZE), which
// disconnects the sender; they are not counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "net/link/link_envelope.hpp"
#include "net/security/curve_keys.hpp"

namespace shoal {

enum class link_role : uint8_t { hub, member };

enum class peer_state : uint8_t { up, suspect, down };

std::string_view to_string(peer_state s) noexcept;

// A fresh incarnation: larger than any this process made before, and (clock
// permitting) than those of earlier processes.
uint64_t new_incarnation();

// CurveZMQ on the link. Hub: `own` is the server key, `allowed` the member
// public keys accepted. Member: `own` is its client key, `hub_public_key`
// the hub's.
struct link_curve_keys {
  bool enabled = false;
  curve_key_pair own;
  curve_key hub_public_key{};
  std::vector<curve_key> allowed;
};

struct node_link_config {
  link_role role = link_role::member;
  // This node's name: 1..128 printable ASCII bytes, no spaces.
  std::string name;
  // 0: new_incarnation().
  uint64_t incarnation = 0;
  // The shared cluster secret; empty turns authentication off.
  std::string secret;
  // Encryption and key checks at the connection (off: plain TCP).
  link_curve_keys curve;
  // Hub: the endpoint to bind (tcp://127.0.0.1:0 picks a port; endpoint()
  // tells which). Member: the hub's endpoint to connect to.
  std::string endpoint;
  // Member: the first hello body (set_hello replaces it).
  std::string hello;
  std::chrono::milliseconds heartbeat_interval{100};
  std::chrono::milliseconds suspect_after{300};
  std::chrono::milliseconds heartbeat_timeout{1000};
  // Hub: heartbeats a second (each way) past which it lengthens the
  // interval (see "Heartbeat cadence"); 0: always heartbeat_interval.
  uint32_t hub_heartbeat_rate = 1000;
  // Hub: a down member is forgotten (leaves peers()) after this long.
  std::chrono::milliseconds forget_after{std::chrono::minutes{5}};
  // Largest frame; bodies may use all but link_envelope_overhead of it.
  size_t max_frame_bytes = envelope_limits{}.max_frame_bytes;
  // ZeroMQ high-water marks (messages) per connection; 0 = none. The link
  // never blocks, so a message over the mark is dropped (send_failed), and
  // a burst larger than the marks would lose messages to a healthy peer.
  // Hence no mark by default: what is in flight to a peer is bounded by
  // its callers (the router's windows), and a peer that stops reading
  // loses its connection to the ZMTP heartbeat timeout, which frees it.
  int sndhwm = 0;
  int rcvhwm = 0;
};

// Called on the link thread: they must not block (no waiting on other
// threads, no long work) and must not call stop(); they may call send(),
// set_hello(), peers() and stats(). Exceptions are caught and logged.
struct link_handlers {
  // An application message from a live session. `body` is valid only
  // during the call.
  std::function<void(const std::string& peer, uint64_t incarnation,
                     std::string_view type, std::string_view body)>
      on_message;
  // A session changed state. `up` is reported when a session opens (hub:
  // on a hello; member: on a welcome), when a suspect or down peer is back,
  // and on the hub also when a live member re-hellos with a different
  // hello body (so `up` may repeat for one incarnation; the new body is
  // already in peers() during the call). Each session that was reported up
  // is reported down at most once.
  std::function<void(const std::string& peer, uint64_t incarnation,
                     peer_state state, const std::string& reason)>
      on_peer_state;
};

struct peer_info {
  std::string name;
  uint64_t incarnation = 0;
  peer_state state = peer_state::down;
  // Time since the last message accepted from this peer.
  std::chrono::milliseconds last_seen_age{0};
  // Hub: the member's last accepted hello body. Member: empty.
  std::string hello;
};

struct link_stats {
  uint64_t messages_sent = 0;     // application messages handed to ZeroMQ
  uint64_t messages_received = 0; // application messages delivered
  uint64_t bytes_sent = 0;        // frame bytes, every type
  uint64_t bytes_received = 0;    // frame bytes, every frame read
  uint64_t heartbeats_sent = 0;
  uint64_t heartbeats_received = 0;
  uint64_t dropped_malformed = 0; // incl. wrong version and oversized
  uint64_t dropped_unauthenticated = 0;
  uint64_t dropped_stale = 0; // no live session, old incarnation, replay
  uint64_t send_failed = 0;   // peer gone, not connected, or HWM reached
  uint64_t refused_keys = 0;  // hub: CURVE handshakes with a key not allowed
  // Handshakes that failed, either role (see "Failed handshakes").
  uint64_t handshake_failures = 0;
};

class node_link {
public:
  // Validates the config (errc::config_invalid), binds or connects
  // (errc::io_error naming the endpoint) and starts the link thread.
  static caf::expected<std::unique_ptr<node_link>>
  start(node_link_config cfg, link_handlers handlers);

  // Calls stop().
  ~node_link();
  node_link(const node_link&) = delete;
  node_link& operator=(const node_link&) = delete;

  // Queues an application message for `peer` (hub: a member's name;
  // member: "" or the hub's name). Fire and forget. Errors returned here:
  // errc::invalid_argument (type empty, over 64 bytes or reserved "link.";
  // body over the limit), errc::not_found (no such peer),
  // errc::unavailable (peer down or not yet joined, link stopped) and
  // errc::resource_exhausted (65536 messages waiting: the thread is stuck).
  // A message that passes and is then overtaken by events (the peer goes
  // down before the link thread sends it, a configured HWM is reached) is
  // dropped and counted in send_failed; the on_peer_state callback is how
  // callers learn that in-flight work is lost.
  caf::error send(const std::string& peer, std::string_view type,
                  std::string body);

  // Member: the body of every later hello (not sent by itself: the hub
  // gets it the next time this member joins, e.g. after a hub restart).
  // errc::invalid_argument when the body is over the limit.
  caf::error set_hello(std::string body);

  std::vector<peer_info> peers() const;
  // What peers() lists for `name`, or nullopt, without copying the others
  // (a hub may have a thousand members, each with its hello).
  std::optional<peer_info> peer(std::string_view name) const;
  link_stats stats() const;

  // The endpoint actually bound (hub) or connected to (member).
  const std::string& endpoint() const noexcept;
  const std::string& name() const noexcept;
  uint64_t incarnation() const noexcept;

  // Stops and joins the link thread and closes the socket (ZMQ_LINGER 0):
  // messages still queued or unsent are dropped, so a last goodbye needs a
  // few ms between send() and stop(). Idempotent.
  void stop();

  // Test hook imitating SIGSTOP: the link thread neither sends nor receives
  // (nor checks timers) for `d`. Messages sent meanwhile are queued, and
  // go out first when it resumes, before anything is read.
  void pause_for_test(std::chrono::milliseconds d);

private:
  node_link();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal
