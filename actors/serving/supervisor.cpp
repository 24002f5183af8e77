#include "actors/serving/supervisor.hpp"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include "net/wire/error.hpp"

namespace shoal {

std::optional<std::chrono::milliseconds> restart_tracker::next(time_point now) {
  while (!recent_.empty() && now - recent_.front() > policy_.period) {
    recent_.pop_front();
  }
  if (recent_.size() >= policy_.max_restarts) {
    return std::nullopt;
  }
  auto n = recent_.size();
  recent_.push_back(now);
  ++total_;
  auto delay = policy_.backoff_initial;
  for (size_t i = 0; i < n && delay < policy_.backoff_max; ++i) {
    delay *= 2;
  }
  return std::min(delay, policy_.backoff_max);
}

namespace {

using self_ptr = supervisor_handle::stateful_pointer<supervisor_state>;

// Exits that are not failures: retirement, shutdown, and loads that can not
// succeed by retrying (the requester is told instead).
bool permanent(const caf::error& reason) {
  if (!reason || reason == caf::exit_reason::normal ||
      reason == caf::exit_reason::user_shutdown ||
      reason == caf::exit_reason::kill) {
    return true;
  }
  return reason.category() == caf::atom("shoal") &&
         static_cast<errc>(reason.code()) == errc::unavailable;
}

void start_child(self_ptr self, uint64_t id, std::string_view reason) {
  auto& st = self->state;
  auto i = st.slots.find(id);
  if (i == st.slots.end()) {
    return;
  }
  auto& s = i->second;
  s.child = st.factory(self, s.model, s.version, s.listener);
  if (!s.child) {
    self->send(s.listener, spawn_fail_atom::value, s.model, s.version,
               "model " + s.model + " v" + std::to_string(s.version) +
                   " is not in this node's model repository");
    st.slots.erase(i);
    return;
  }
  st.by_child[s.child.address()] = id;
  self->monitor(s.child);
  // Linked so that children die with the supervisor (node shutdown); their
  // own exits are trapped below and handled through the monitor.
  self->link_to(s.child);
  if (st.on_spawn) {
    st.on_spawn(reason);
  }
}

// Stops a slot's child for good (retirement: it is not restarted) and
// drops the slot, so that a spawn request right after it can never find
// the retiring child still listed.
std::map<uint64_t, supervisor_state::slot>::iterator
stop_slot(self_ptr self,
          std::map<uint64_t, supervisor_state::slot>::iterator i) {
  auto& st = self->state;
  if (auto& child = i->second.child) {
    st.by_child.erase(child.address());
    self->demonitor(child);
    self->unlink_from(child);
    self->send_exit(child, caf::exit_reason::user_shutdown);
  }
  return st.slots.erase(i);
}

// The restart limit is hit: the node escalates and the requester learns
// that no replica comes.
void escalate(self_ptr self, const supervisor_state::slot& s,
              const caf::error& reason) {
  auto& st = self->state;
  auto why = "executor " + s.model + " v" + std::to_string(s.version) +
             " failed " + std::to_string(st.policy.max_restarts + 1) +
             " times within " + std::to_string(st.policy.period.count()) +
             " ms (last: " + reason_of(reason) + ")";
  spdlog::critical("supervisor: restart limit hit, escalating: {}", why);
  st.escalated = true;
  // Escalate before telling the requester: in shoald escalation ends the
  // process, and nobody must act on the failure before it does.
  if (st.escalate) {
    st.escalate(why);
  }
  self->send(s.listener, spawn_fail_atom::value, s.model, s.version, why);
}

// A child died: permanent exits drop its slot (a load failure is reported
// to the requester), others are restarted after a backoff, or escalate.
void on_child_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  auto i = st.by_child.find(dm.source);
  if (i == st.by_child.end()) {
    return;
  }
  auto id = i->second;
  st.by_child.erase(i);
  auto j = st.slots.find(id);
  if (j == st.slots.end()) {
    return;
  }
  auto& s = j->second;
  s.child = nullptr;
  if (permanent(dm.reason)) {
    if (dm.reason.category() == caf::atom("shoal")) {
      self->send(s.listener, spawn_fail_atom::value, s.model, s.version,
                 reason_of(dm.reason));
    }
    st.slots.erase(j);
    return;
  }
  auto delay = st.tracker->next(clock_type::now());
  if (!delay) {
    escalate(self, s, dm.reason);
    st.slots.erase(j);
    return;
  }
  spdlog::warn("supervisor: executor {} v{} died ({}), restart in {} ms",
               s.model, s.version, reason_of(dm.reason), delay->count());
  self->delayed_send(self, *delay, restart_atom::value, id);
}

// Children's failures are handled through their monitors; only a shutdown
// from outside stops the supervisor (and, through the links, every child).
void on_exit(self_ptr self, caf::exit_msg& em) {
  if (self->state.by_child.count(em.source) > 0) {
    return;
  }
  if (em.reason == caf::exit_reason::user_shutdown ||
      em.reason == caf::exit_reason::kill) {
    self->quit(em.reason);
  }
}

void on_spawn(self_ptr self, const std::string& model, uint64_t version,
              const std::string& reason) {
  auto& st = self->state;
  // Whoever asks is told when the replica is ready (replica_source_handle).
  auto listener =
      caf::actor_cast<replica_listener_handle>(self->current_sender());
  for (auto& [id, s] : st.slots) {
    if (s.model == model && s.version == version) {
      // A restart is pending or the child is alive: it will report.
      s.listener = listener;
      return;
    }
  }
  if (st.escalated) {
    self->send(listener, spawn_fail_atom::value, model, version,
               std::string{"node is escalating after repeated failures"});
    return;
  }
  auto id = st.next_slot++;
  st.slots[id] = supervisor_state::slot{model, version, listener, {}};
  start_child(self, id, reason);
}

void on_idle(self_ptr self, const std::string& model, uint64_t version) {
  auto& st = self->state;
  for (auto i = st.slots.begin(); i != st.slots.end();) {
    if (i->second.model == model && i->second.version == version) {
      i = stop_slot(self, i);
    } else {
      ++i;
    }
  }
}

void on_retire(self_ptr self, const replica_handle& replica) {
  auto& st = self->state;
  auto i = st.by_child.find(replica.address());
  if (i == st.by_child.end()) {
    return;
  }
  if (auto j = st.slots.find(i->second); j != st.slots.end()) {
    stop_slot(self, j);
  }
}

} // namespace

supervisor_handle::behavior_type
supervisor_actor(self_ptr self, restart_policy policy, child_factory factory,
                 std::function<void(const std::string&)> escalate,
                 std::function<void(std::string_view)> on_spawn_metric) {
  auto& st = self->state;
  st.policy = policy;
  st.tracker = std::make_unique<restart_tracker>(policy);
  st.factory = std::move(factory);
  st.escalate = std::move(escalate);
  st.on_spawn = std::move(on_spawn_metric);
  self->set_exit_handler([=](caf::exit_msg& em) { on_exit(self, em); });
  self->set_down_handler([=](caf::down_msg& dm) { on_child_down(self, dm); });
  return {
      [=](spawn_atom, const std::string& model, uint64_t version,
          const std::string& reason) {
        on_spawn(self, model, version, reason);
      },
      [=](restart_atom, uint64_t id) { start_child(self, id, "restart"); },
      [=](idle_atom, const std::string& model, uint64_t version) {
        on_idle(self, model, version);
      },
      [=](retire_atom, const replica_handle& replica) {
        on_retire(self, replica);
      },
      [=](count_atom) {
        auto& st = self->state;
        return std::make_tuple(static_cast<uint64_t>(st.by_child.size()),
                               st.tracker->total());
      },
  };
}

} // namespace shoal
