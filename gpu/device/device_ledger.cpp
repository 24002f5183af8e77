#include "gpu/device/device_ledger.hpp"

namespace shoal {

device_ledger& device_ledger::instance() {
  static device_ledger ledger;
  return ledger;
}

uint64_t device_ledger::add(int device, std::string model, uint64_t version,
                            uint64_t bytes, std::function<void()> retire) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto id = next_id_++;
  record r;
  r.e.id = id;
  r.e.device = device;
  r.e.model = std::move(model);
  r.e.version = version;
  r.e.bytes = bytes;
  r.e.last_used = std::chrono::steady_clock::now();
  r.retire = std::move(retire);
  records_.emplace(id, std::move(r));
  return id;
}

void device_ledger::remove(uint64_t id) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    records_.erase(id);
  }
  released_.notify_all();
}

void device_ledger::set_bytes(uint64_t id, uint64_t bytes) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = records_.find(id); i != records_.end()) {
    i->second.e.bytes = bytes;
  }
}

void device_ledger::touch(uint64_t id, bool busy) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = records_.find(id); i != records_.end()) {
    i->second.e.busy = busy;
    i->second.e.last_used = std::chrono::steady_clock::now();
  }
}

std::string device_ledger::retire_idle(int device, uint64_t except,
                                       std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock{mtx_};
  record* victim = nullptr;
  for (auto& [id, r] : records_) {
    if (id == except || r.e.device != device || r.e.busy || r.retiring ||
        !r.retire) {
      continue;
    }
    if (!victim || r.e.last_used < victim->e.last_used) {
      victim = &r;
    }
  }
  if (!victim) {
    return {};
  }
  victim->retiring = true;
  auto id = victim->e.id;
  auto what = victim->e.model + " v" + std::to_string(victim->e.version);
  auto retire = victim->retire;
  // The owner may run its shutdown on this very thread's caller chain;
  // never call out while holding the lock.
  lock.unlock();
  retire();
  lock.lock();
  released_.wait_for(lock, wait, [&] { return records_.count(id) == 0; });
  return records_.count(id) == 0 ? what : std::string{};
}

std::vector<device_ledger::entry> device_ledger::replicas(int device) const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::vector<entry> out;
  for (auto& [id, r] : records_) {
    if (device < 0 || r.e.device == device) {
      out.push_back(r.e);
    }
  }
  return out;
}

} // namespace shoal
