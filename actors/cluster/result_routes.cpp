#include "actors/cluster/result_routes.hpp"

#include <caf/send.hpp>

#include "net/link/cluster_codec.hpp"

namespace shoal {

void result_routes::add(const std::string& worker, uint64_t incarnation,
                        uint64_t replica, remote_replica_handle proxy,
                        router_handle router) {
  std::lock_guard guard{mtx_};
  routes_[{worker, replica}] = {incarnation, std::move(proxy),
                                std::move(router)};
}

void result_routes::remove(const std::string& worker, uint64_t replica) {
  std::lock_guard guard{mtx_};
  routes_.erase({worker, replica});
}

void result_routes::remove_worker(const std::string& worker) {
  std::lock_guard guard{mtx_};
  auto first = routes_.lower_bound({worker, 0});
  auto last = first;
  while (last != routes_.end() && last->first.first == worker) {
    ++last;
  }
  routes_.erase(first, last);
}

bool result_routes::find(const std::string& worker, uint64_t incarnation,
                         uint64_t replica, route& out) const {
  std::lock_guard guard{mtx_};
  auto i = routes_.find({worker, replica});
  if (i == routes_.end() || i->second.incarnation != incarnation ||
      !i->second.router) {
    return false;
  }
  out = i->second;
  return true;
}

bool result_routes::deliver(const std::string& worker, uint64_t incarnation,
                            std::string_view type,
                            std::string_view body) const {
  auto op = parse_cluster_op(type);
  if (op != cluster_op::done && op != cluster_op::progress) {
    return false;
  }
  std::string bytes{body};
  route r;
  if (*op == cluster_op::done) {
    done_msg m;
    if (decode(bytes, m) || !find(worker, incarnation, m.replica, r)) {
      return false;
    }
    caf::send_as(r.proxy, r.router, done_atom::value, std::move(m.results));
    return true;
  }
  progress_msg m;
  if (decode(bytes, m) || !find(worker, incarnation, m.replica, r)) {
    return false;
  }
  caf::send_as(r.proxy, r.router, progress_atom::value, std::move(m.tickets),
               m.done, m.total);
  return true;
}

} // namespace shoal
