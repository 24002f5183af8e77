// result_routes: the head's shortcut for a worker's results. The link
// thread hands a `done` or `progress` straight to the router, as the
// replica's proxy, instead of posting it to the coordinator, which passed
// it to the proxy, which passed it to the router: two mailboxes fewer per
// batch, and results no longer queue behind the coordinator's control
// plane (joins, placements, status).
//
// The coordinator keeps the table: a replica is added when its proxy is
// spawned and removed when the proxy is told to quit. A result goes the
// short way only from the worker incarnation its replica was adopted in;
// anything else (an unknown replica, a body that does not decode) goes the
// old way, through the coordinator, which drops and logs what it does not
// know. The router takes a result only from the replica its ticket runs on,
// so a result that races its proxy's exit is either that ticket's answer
// (as from a local executor that finished just before it died) or dropped:
// one reply per request id either way.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "actors/cluster/remote_replica.hpp"
#include "actors/serving/router.hpp"

namespace shoal {

class result_routes {
public:
  void add(const std::string& worker, uint64_t incarnation, uint64_t replica,
           remote_replica_handle proxy, router_handle router);
  void remove(const std::string& worker, uint64_t replica);
  void remove_worker(const std::string& worker);

  // On the link thread: true when `type` is a result op of a replica in the
  // table and it went to the router; false leaves it to the coordinator.
  bool deliver(const std::string& worker, uint64_t incarnation,
               std::string_view type, std::string_view body) const;

private:
  struct route {
    uint64_t incarnation = 0;
    remote_replica_handle proxy;
    router_handle router;
  };

  bool find(const std::string& worker, uint64_t incarnation, uint64_t replica,
            route& out) const;

  mutable std::mutex mtx_;
  std::map<std::pair<std::string, uint64_t>, route> routes_;
};

} // namespace shoal
