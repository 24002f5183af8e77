// The router's answers to the non-infer ops: models, status, load, unload.
#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "actors/serving/router.hpp"
#include "gpu/device/node_devices.hpp"
#include "net/wire/codec.hpp"

namespace shoal {

namespace {

using self_ptr = router_handle::stateful_pointer<router_state>;

void send_admin_reply(self_ptr self, const admin_job& job, reply& r) {
  auto& st = self->state;
  r.id = job.id;
  st.encode_buf.clear();
  encode_reply(r, st.encode_buf);
  st.sink->push(job.route, st.encode_buf);
  st.metrics->op_reply(static_cast<op_kind>(job.op), r.code);
}

void fail(self_ptr self, const admin_job& job, status code,
          std::string reason) {
  reply r;
  r.code = code;
  r.error = std::move(reason);
  r.model = job.model;
  send_admin_reply(self, job, r);
}

void models_reply(self_ptr self, const admin_job& job) {
  auto& st = self->state;
  reply r;
  r.has_models = true;
  auto catalog = st.catalog->get();
  for (auto& [name, versions] : catalog->models) {
    model_info info;
    info.name = name;
    info.state = "available";
    for (auto& [v, spec] : versions) {
      info.versions.push_back(v);
      auto mi = st.models.find({name, v});
      if (mi == st.models.end()) {
        continue;
      }
      if (!mi->second.replicas.empty()) {
        info.state = "loaded";
      } else if (mi->second.spawn_requested && info.state != "loaded") {
        info.state = "loading";
        if (st.cfg.progress) {
          if (auto p = st.cfg.progress->get(name, v)) {
            info.has_progress = true;
            info.bytes_done += p->done;
            info.bytes_total += p->total;
          }
        }
      }
    }
    auto& newest = versions.rbegin()->second;
    info.inputs = newest->inputs;
    info.outputs = newest->outputs;
    r.models.push_back(std::move(info));
  }
  send_admin_reply(self, job, r);
}

void status_reply(self_ptr self, const admin_job& job) {
  auto& st = self->state;
  reply r;
  r.has_nodes = true;
  node_info n;
  n.name = st.cfg.node_name;
  n.role = st.cfg.node_role;
  n.state = st.draining ? "draining" : "up";
  std::map<std::string, uint64_t> per_model;
  for (auto& [key, m] : st.models) {
    if (!m.replicas.empty()) {
      per_model[key.first] += m.replicas.size();
    }
  }
  n.replicas.assign(per_model.begin(), per_model.end());
  n.devices = local_devices();
  r.nodes.push_back(std::move(n));
  send_admin_reply(self, job, r);
}

// An explicitly loaded model stays until unloaded, as in Triton's explicit
// model control. The reply waits for the replica when none runs yet.
void load_model(self_ptr self, const admin_job& job,
                router_state::model_entry& m) {
  auto& st = self->state;
  auto& spec = *m.spec;
  m.pinned = true;
  if (!m.replicas.empty()) {
    reply r;
    r.model = spec.name;
    r.version = spec.version;
    r.node = st.cfg.node_name;
    return send_admin_reply(self, job, r);
  }
  m.load_waiters.push_back(
      {job.id, job.route, now_ns(), 0, reply_source::none, op_kind::load});
  if (!m.spawn_requested) {
    m.spawn_requested = true;
    self->send(st.replicas, spawn_atom::value, spec.name, spec.version,
               std::string{"load"});
  }
}

// Unpins a model and retires its replicas, unless it has work queued or
// running (then the client retries).
void unload_model(self_ptr self, const admin_job& job,
                  router_state::model_entry& m) {
  auto& st = self->state;
  auto& spec = *m.spec;
  m.pinned = spec.pinned;
  if (!m.queue.empty()) {
    return fail(self, job, status::unavailable,
                "model " + spec.name + " has " +
                    std::to_string(m.queue.size()) +
                    " requests queued; retry when they are served");
  }
  bool busy = std::any_of(m.replicas.begin(), m.replicas.end(),
                          [](auto& r) { return r.outstanding > 0; });
  if (busy) {
    return fail(self, job, status::unavailable,
                "model " + spec.name +
                    " is running requests; retry when they are served");
  }
  for (auto& r : m.replicas) {
    self->demonitor(r.handle.address());
    st.metrics->executors(spec.name, -1);
  }
  m.replicas.clear();
  self->send(st.replicas, idle_atom::value, spec.name, spec.version);
  reply r;
  r.model = spec.name;
  r.version = spec.version;
  send_admin_reply(self, job, r);
}

} // namespace

void router_admin(self_ptr self, admin_job& job) {
  auto& st = self->state;
  auto op = static_cast<op_kind>(job.op);
  if (op == op_kind::models) {
    return models_reply(self, job);
  }
  if (op == op_kind::status) {
    if (st.cfg.cluster) {
      return self->send(st.cluster_status, std::move(job));
    }
    return status_reply(self, job);
  }
  std::optional<uint64_t> version;
  if (job.version > 0) {
    version = job.version;
  }
  auto spec = st.catalog->get()->resolve(job.model, version);
  if (!spec) {
    return fail(self, job, status::not_found,
                "model " + job.model +
                    (version ? " v" + std::to_string(*version) : "") +
                    " not found");
  }
  auto& m = st.entry_for(spec);
  if (op == op_kind::load) {
    return load_model(self, job, m);
  }
  if (op == op_kind::unload) {
    return unload_model(self, job, m);
  }
  fail(self, job, status::invalid_argument,
       "op " + std::string{to_string(op)} + " is not handled by the router");
}

} // namespace shoal
