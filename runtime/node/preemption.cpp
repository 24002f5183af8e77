#include "runtime/node/preemption.hpp"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include <curl/curl.h>
#include <spdlog/spdlog.h>

namespace shoal {

namespace {

// A notice answer is a few bytes; a server that sends more is cut off.
constexpr size_t max_body_bytes = 4096;

size_t collect(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<std::string*>(user);
  auto bytes = size * n;
  if (body->size() + bytes > max_body_bytes) {
    return 0; // makes curl stop with CURLE_WRITE_ERROR
  }
  body->append(data, bytes);
  return bytes;
}

// GET `url`: the HTTP status (0 when there was no answer) and the body.
long http_get(const std::string& url, std::chrono::milliseconds timeout,
              std::string& body) {
  CURL* c = curl_easy_init();
  if (c == nullptr) {
    return 0;
  }
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  long status = 0;
  if (curl_easy_perform(c) == CURLE_OK) {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  }
  curl_easy_cleanup(c);
  return status;
}

} // namespace

bool is_preemption_notice(long http_status, const std::string& body) {
  if (http_status != 200) {
    return false;
  }
  std::string word;
  for (char ch : body) {
    if (!std::isspace(static_cast<unsigned char>(ch))) {
      word += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
  }
  return word != "false";
}

struct preemption_watcher::impl {
  preemption_config cfg;
  std::function<void(const std::string&)> on_notice;
  std::mutex mtx;
  std::condition_variable cv;
  bool stopping = false;
  std::thread thread;

  // The source of a notice, or empty.
  std::string look() const {
    std::error_code ec;
    if (!cfg.file.empty() && std::filesystem::exists(cfg.file, ec)) {
      return cfg.file;
    }
    if (!cfg.url.empty()) {
      std::string body;
      auto timeout = std::min(cfg.poll, std::chrono::milliseconds{2000});
      if (is_preemption_notice(http_get(cfg.url, timeout, body), body)) {
        return cfg.url;
      }
    }
    return {};
  }

  void run() {
    std::unique_lock guard{mtx};
    while (!stopping) {
      guard.unlock();
      auto source = look();
      guard.lock();
      if (!source.empty() && !stopping) {
        guard.unlock();
        on_notice(source);
        return;
      }
      cv.wait_for(guard, cfg.poll, [this] { return stopping; });
    }
  }
};

std::unique_ptr<preemption_watcher>
preemption_watcher::start(preemption_config cfg,
                          std::function<void(const std::string&)> on_notice) {
  if (cfg.url.empty() && cfg.file.empty()) {
    return nullptr;
  }
  std::unique_ptr<preemption_watcher> w{new preemption_watcher};
  w->impl_ = std::make_unique<impl>();
  auto& d = *w->impl_;
  d.cfg = std::move(cfg);
  d.on_notice = std::move(on_notice);
  d.thread = std::thread{[&d] { d.run(); }};
  return w;
}

preemption_watcher::~preemption_watcher() {
  {
    std::lock_guard guard{impl_->mtx};
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) {
    impl_->thread.join();
  }
}

} // namespace shoal
