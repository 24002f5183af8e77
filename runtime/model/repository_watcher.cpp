#include "runtime/model/repository_watcher.hpp"

#include <spdlog/spdlog.h>

#include "net/wire/error.hpp"
#include "runtime/model/repository.hpp"

namespace shoal {

std::shared_ptr<repository_watcher> repository_watcher::start(
    store_config store, std::chrono::milliseconds poll,
    live_catalog_ptr catalog,
    std::function<void(const catalog_update&)> on_change) {
  std::shared_ptr<repository_watcher> w{new repository_watcher};
  w->store_ = std::move(store);
  w->poll_ = poll;
  w->catalog_ = std::move(catalog);
  w->on_change_ = std::move(on_change);
  w->thread_ = std::thread{[p = w.get()] { p->run(); }};
  return w;
}

repository_watcher::~repository_watcher() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void repository_watcher::request(reread_done done) {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    waiting_.push_back(std::move(done));
  }
  cv_.notify_all();
}

void repository_watcher::run() {
  std::unique_lock<std::mutex> lk{mtx_};
  auto woken = [this] { return stop_ || !waiting_.empty(); };
  while (!stop_) {
    if (poll_.count() > 0) {
      cv_.wait_for(lk, poll_, woken);
    } else {
      cv_.wait(lk, woken);
    }
    if (stop_) {
      break;
    }
    auto waiters = std::move(waiting_);
    waiting_.clear();
    lk.unlock();
    auto result = reread(!waiters.empty());
    for (auto& w : waiters) {
      w(result);
    }
    lk.lock();
  }
}

namespace {

std::string list(const std::vector<catalog_change>& xs) {
  std::string out;
  for (auto& c : xs) {
    out +=
        (out.empty() ? "" : ", ") + c.model + " v" + std::to_string(c.version);
  }
  return out;
}

} // namespace

caf::expected<catalog_update> repository_watcher::reread(bool asked) {
  auto up = reread_repository(store_, *catalog_->get());
  if (!up) {
    auto why = reason_of(up.error());
    if (asked || why != last_error_) {
      spdlog::warn("model repository {}: re-read failed, the catalog stays "
                   "as it was: {}",
                   store_.repository, why);
    }
    last_error_ = why;
    return up;
  }
  last_error_.clear();
  std::set<std::string> refusals;
  for (auto& r : up->refused) {
    if (asked || refusals_logged_.count(r.error) == 0) {
      spdlog::warn("model repository: {} v{} refused: {}", r.model, r.version,
                   r.error);
    }
    refusals.insert(r.error);
  }
  refusals_logged_ = std::move(refusals);
  if (up->changed()) {
    catalog_->set(up->catalog);
    spdlog::info("model repository {}: added [{}], removed [{}]",
                 store_.repository, list(up->added), list(up->removed));
    if (on_change_) {
      on_change_(*up);
    }
  }
  return up;
}

} // namespace shoal
