#include "runtime/model/model_store.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/wire/error.hpp"
#include "runtime/model/verified_record.hpp"

namespace shoal {

namespace {

namespace fs = std::filesystem;

constexpr size_t io_chunk = size_t{1} << 20;

// Progress callbacks are throttled to one per this many bytes.
constexpr uint64_t progress_step = uint64_t{1} << 20;

std::once_flag global_init_once;

void global_init() {
  std::call_once(global_init_once,
                 [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string errno_text() {
  return std::strerror(errno);
}

class fd_guard {
public:
  explicit fd_guard(int fd = -1) : fd_(fd) {
    // nop
  }

  ~fd_guard() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;

  int get() const noexcept { return fd_; }

  explicit operator bool() const noexcept { return fd_ >= 0; }

private:
  int fd_;
};

struct curl_deleter {
  void operator()(CURL* h) const noexcept { curl_easy_cleanup(h); }
};

using curl_ptr = std::unique_ptr<CURL, curl_deleter>;

std::string to_hex(const unsigned char* data, size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0x0f];
  }
  return out;
}

bool write_all(int fd, const char* data, size_t size, uint64_t offset) {
  while (size > 0) {
    auto n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

int64_t file_size(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return -1;
  }
  return st.st_size;
}

// A name from the manifest must stay inside the version directory.
bool valid_name(const std::string& name) {
  if (name.empty() || name.front() == '/' ||
      name.find('\0') != std::string::npos ||
      name.find('\\') != std::string::npos) {
    return false;
  }
  size_t pos = 0;
  while (pos <= name.size()) {
    auto end = name.find('/', pos);
    if (end == std::string::npos) {
      end = name.size();
    }
    auto part = std::string_view{name}.substr(pos, end - pos);
    if (part.empty() || part == "." || part == "..") {
      return false;
    }
    pos = end + 1;
  }
  return true;
}

bool valid_sha256(const std::string& hex) {
  return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c)) != 0;
         });
}

std::string lower(std::string str) {
  for (auto& c : str) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return str;
}

bool starts_with_ci(std::string_view str, std::string_view prefix) {
  if (str.size() < prefix.size()) {
    return false;
  }
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(str[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

// Reports progress for one file; the range workers share one instance.
class progress_state {
public:
  progress_state(const fetch_options& opts, const std::string& name)
      : opts_(opts), name_(name) {
    // nop
  }

  void reset(uint64_t done, uint64_t total) {
    std::lock_guard guard{mtx_};
    done_ = done;
    total_ = total;
    reported_ = done;
  }

  void add(uint64_t n) {
    std::lock_guard guard{mtx_};
    done_ += n;
    received_ += n;
    if (opts_.progress &&
        (done_ - reported_ >= progress_step || done_ == total_)) {
      reported_ = done_;
      opts_.progress(name_, done_, total_);
    }
  }

  // A server claiming a bigger file is refused before disk is spent on it.
  uint64_t max_bytes() const noexcept { return opts_.max_file_bytes; }

  void finish() {
    std::lock_guard guard{mtx_};
    if (opts_.progress && reported_ != done_) {
      opts_.progress(name_, done_, total_ == 0 ? done_ : total_);
    }
  }

  // Bytes received since the last call.
  uint64_t take_received() {
    std::lock_guard guard{mtx_};
    return std::exchange(received_, 0);
  }

private:
  const fetch_options& opts_;
  const std::string& name_;
  std::mutex mtx_;
  uint64_t done_ = 0;
  uint64_t total_ = 0; // 0: unknown
  uint64_t reported_ = 0;
  uint64_t received_ = 0;
};

// -- local sources -----------------------------------------------------------

caf::error copy_local(const std::string& src, const std::string& part,
                      const std::string& name, progress_state& prog) {
  fd_guard in{::open(src.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!in) {
    return make_error(errc::unavailable,
                      name + ": cannot open " + src + ": " + errno_text());
  }
  auto size = file_size(in.get());
  if (size < 0) {
    return make_error(errc::io_error,
                      name + ": stat " + src + ": " + errno_text());
  }
  if (static_cast<uint64_t>(size) > prog.max_bytes()) {
    return make_error(errc::unavailable,
                      name + ": " + src + " is larger than the limit of " +
                          std::to_string(prog.max_bytes()) + " bytes");
  }
  fd_guard out{
      ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (!out) {
    return make_error(errc::io_error,
                      name + ": cannot create " + part + ": " + errno_text());
  }
  prog.reset(0, static_cast<uint64_t>(size));
  std::vector<char> buf(io_chunk);
  uint64_t offset = 0;
  for (;;) {
    auto n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return make_error(errc::unavailable,
                        name + ": read " + src + ": " + errno_text());
    }
    if (n == 0) {
      break;
    }
    if (!write_all(out.get(), buf.data(), static_cast<size_t>(n), offset)) {
      return make_error(errc::io_error,
                        name + ": write " + part + ": " + errno_text());
    }
    offset += static_cast<uint64_t>(n);
    prog.add(static_cast<uint64_t>(n));
  }
  return {};
}

// -- HTTP --------------------------------------------------------------------

// Connection-level failures and server overload are worth another attempt;
// a 404 or a refused TLS certificate is not.
bool is_transient(CURLcode rc, long status) {
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_PARTIAL_FILE:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return true;
  case CURLE_HTTP_RETURNED_ERROR:
    return status >= 500 || status == 408 || status == 429;
  default:
    return false;
  }
}

// What a response's headers said; reset at each status line because
// redirects produce several header blocks.
struct header_info {
  bool accept_ranges = false;
  int64_t range_first = -1;
  int64_t range_total = -1;
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* info = static_cast<header_info*>(user);
  auto len = size * count;
  std::string_view line{data, len};
  if (starts_with_ci(line, "HTTP/")) {
    *info = header_info{};
  } else if (starts_with_ci(line, "accept-ranges:")) {
    info->accept_ranges =
        lower(std::string{line}).find("bytes") != std::string::npos;
  } else if (starts_with_ci(line, "content-range:")) {
    // "Content-Range: bytes FIRST-LAST/TOTAL"
    unsigned long long first = 0, last = 0, total = 0;
    std::string str{line.substr(14)};
    if (std::sscanf(str.c_str(), " bytes %llu-%llu/%llu", &first, &last,
                    &total) == 3) {
      info->range_first = static_cast<int64_t>(first);
      info->range_total = static_cast<int64_t>(total);
    }
  }
  return len;
}

struct abort_flag {
  std::atomic<bool> value{false};
};

int on_xferinfo(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* flag = static_cast<abort_flag*>(user);
  return flag != nullptr && flag->value.load() ? 1 : 0;
}

curl_ptr make_handle(const std::string& url, const fetch_options& opts,
                     char* errbuf, header_info* headers, abort_flag* abort) {
  curl_ptr h{curl_easy_init()};
  if (!h) {
    return h;
  }
  auto* p = h.get();
  auto secs = static_cast<long>(std::max<int64_t>(1, opts.timeout.count()));
  curl_easy_setopt(p, CURLOPT_URL, url.c_str());
  curl_easy_setopt(p, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(p, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(p, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(p, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(p, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(p, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(p, CURLOPT_CONNECTTIMEOUT, secs);
  // A stall, not a slow large download, is what the timeout is for.
  curl_easy_setopt(p, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(p, CURLOPT_LOW_SPEED_TIME, secs);
  curl_easy_setopt(p, CURLOPT_USERAGENT, "shoal-model-store");
  curl_easy_setopt(p, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(p, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(p, CURLOPT_HEADERDATA, headers);
  curl_easy_setopt(p, CURLOPT_XFERINFOFUNCTION, on_xferinfo);
  curl_easy_setopt(p, CURLOPT_XFERINFODATA, abort);
  curl_easy_setopt(p, CURLOPT_NOPROGRESS, 0L);
  return h;
}

std::string describe(CURL* h, CURLcode rc, const char* errbuf,
                     const std::string& url) {
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_HTTP_RETURNED_ERROR && status > 0) {
    return "GET " + url + ": HTTP " + std::to_string(status);
  }
  std::string msg = "GET " + url + ": ";
  msg += errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  return msg;
}

void backoff(int failures) {
  auto ms = std::min(2000, 100 << std::min(failures, 5));
  std::this_thread::sleep_for(std::chrono::milliseconds{ms});
}

struct probe_result {
  int64_t size = -1; // -1: unknown
  bool ranges = false;
};

// HEAD is only a hint for splitting into ranges: when it fails, the GET
// that follows reports the real error (and retries).
probe_result probe(const std::string& url, const fetch_options& opts) {
  char errbuf[CURL_ERROR_SIZE] = {0};
  header_info headers;
  auto h = make_handle(url, opts, errbuf, &headers, nullptr);
  probe_result res;
  if (!h) {
    return res;
  }
  curl_easy_setopt(h.get(), CURLOPT_NOBODY, 1L);
  if (curl_easy_perform(h.get()) != CURLE_OK) {
    return res;
  }
  curl_off_t len = -1;
  curl_easy_getinfo(h.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
  res.size = len;
  res.ranges = headers.accept_ranges;
  return res;
}

// One GET into the .part file, from `offset` to the end (sequential) or to
// `end` (one range of a parallel download).
struct transfer {
  CURL* handle = nullptr;
  int fd = -1;
  uint64_t offset = 0;     // where the next body byte goes
  uint64_t end = 0;        // exclusive; 0: to the end of the file
  bool expect_206 = false; // a range request must not get the whole file
  bool started = false;
  bool restarted = false; // got 200 to a resume: rewritten from byte 0
  bool no_ranges = false; // the server ignored our Range header
  header_info* headers = nullptr;
  abort_flag* abort = nullptr;
  progress_state* prog = nullptr;
  const std::string* name = nullptr;
  caf::error err; // why the write callback stopped the transfer
};

// The first body bytes of a 206: the range we asked for, of a file within
// the limit.
bool accept_partial(transfer* t) {
  if (t->headers->range_first != static_cast<int64_t>(t->offset)) {
    t->err = make_error(errc::unavailable,
                        *t->name + ": server answered a range request "
                                   "with the wrong range");
    return false;
  }
  if (t->headers->range_total > static_cast<int64_t>(t->prog->max_bytes())) {
    t->err = make_error(errc::unavailable,
                        *t->name + ": file is larger than the limit of " +
                            std::to_string(t->prog->max_bytes()) + " bytes");
    return false;
  }
  return true;
}

// The first body bytes of a 200: the whole file, within the limit; a
// resume that gets it starts over.
bool accept_whole(transfer* t, curl_off_t content_length) {
  if (t->expect_206) {
    t->no_ranges = true;
    return false;
  }
  if (content_length > static_cast<curl_off_t>(t->prog->max_bytes())) {
    t->err = make_error(errc::unavailable,
                        *t->name + ": Content-Length " +
                            std::to_string(content_length) +
                            " is larger than the limit of " +
                            std::to_string(t->prog->max_bytes()) + " bytes");
    return false;
  }
  if (t->offset > 0) {
    // The server does not do ranges: what we have is worthless.
    spdlog::info("model store: {}: server ignored the resume request, "
                 "restarting from byte 0",
                 *t->name);
    if (::ftruncate(t->fd, 0) != 0) {
      t->err =
          make_error(errc::io_error, *t->name + ": truncate: " + errno_text());
      return false;
    }
    t->offset = 0;
    t->restarted = true;
    t->prog->reset(0, content_length > 0 ? static_cast<uint64_t>(content_length)
                                         : 0);
  }
  return true;
}

// Whether the response, seen at its first body bytes, is one to write.
bool accept_response(transfer* t) {
  long status = 0;
  curl_easy_getinfo(t->handle, CURLINFO_RESPONSE_CODE, &status);
  curl_off_t content_length = -1;
  curl_easy_getinfo(t->handle, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                    &content_length);
  if (status == 206) {
    return accept_partial(t);
  }
  if (status == 200) {
    return accept_whole(t, content_length);
  }
  t->err =
      make_error(errc::unavailable, *t->name + ": unexpected HTTP status " +
                                        std::to_string(status));
  return false;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<transfer*>(user);
  auto len = size * count;
  if (t->abort != nullptr && t->abort->value.load()) {
    return 0;
  }
  if (!t->started) {
    t->started = true;
    if (!accept_response(t)) {
      return 0;
    }
  }
  if (t->offset + len > t->prog->max_bytes() ||
      (t->end != 0 && t->offset + len > t->end)) {
    t->err = make_error(errc::unavailable,
                        *t->name + ": server sent more data than expected");
    return 0;
  }
  if (!write_all(t->fd, data, len, t->offset)) {
    t->err = make_error(errc::io_error, *t->name + ": write: " + errno_text());
    return 0;
  }
  t->offset += len;
  t->prog->add(len);
  return len;
}

// One range being downloaded by get_range, across its attempts.
struct range_job {
  const std::string& url;
  const std::string& name;
  int fd;
  uint64_t end; // exclusive; 0: to the end of the file
  bool ranged;  // one range of a parallel download
  std::atomic<uint64_t>& pos;
  const fetch_options& opts;
  progress_state& prog;
  abort_flag* abort;
  bool* no_ranges;
  int failures = 0;
  bool retried_416 = false;
};

enum class attempt_result { done, again };

// The Range header for bytes from `offset`: to `end` (exclusive), or to the
// end of the file; none for the whole file.
std::string range_header(uint64_t offset, uint64_t end) {
  if (end != 0) {
    return std::to_string(offset) + "-" + std::to_string(end - 1);
  }
  return offset > 0 ? std::to_string(offset) + "-" : std::string{};
}

// A GET that completed: the range is done, or the rest is asked for again.
caf::expected<attempt_result> after_complete(range_job& job, bool started,
                                             long status, uint64_t before) {
  if (!started && status == 200 && before > 0 && !job.ranged) {
    // An empty 200 to a resume: the file is empty now.
    if (::ftruncate(job.fd, 0) != 0) {
      return make_error(errc::io_error,
                        job.name + ": truncate: " + errno_text());
    }
    job.pos = 0;
  }
  if (job.end == 0 || job.pos.load() >= job.end) {
    return attempt_result::done;
  }
  // A short but "complete" response: ask again for the rest.
  if (job.pos.load() == before && ++job.failures > job.opts.retries) {
    return make_error(errc::unavailable,
                      job.name + ": GET " + job.url + ": short response");
  }
  return attempt_result::again;
}

// A GET that failed: start over after a 416, retry a transient error with
// backoff, give up on anything else.
caf::expected<attempt_result> after_error(range_job& job, CURL* h, CURLcode rc,
                                          long status, uint64_t before,
                                          const char* errbuf) {
  if (rc == CURLE_HTTP_RETURNED_ERROR && status == 416 && !job.ranged &&
      !job.retried_416) {
    // Our .part is at or past the end of the file: start over.
    job.retried_416 = true;
    if (::ftruncate(job.fd, 0) != 0) {
      return make_error(errc::io_error,
                        job.name + ": truncate: " + errno_text());
    }
    job.pos = 0;
    job.prog.reset(0, 0);
    return attempt_result::again;
  }
  auto what = describe(h, rc, errbuf, job.url);
  if (!is_transient(rc, status)) {
    return make_error(errc::unavailable, job.name + ": " + what);
  }
  if (job.pos.load() > before) {
    job.failures = 0;
  }
  if (++job.failures > job.opts.retries) {
    return make_error(errc::unavailable, job.name + ": " + what + " (after " +
                                             std::to_string(job.opts.retries) +
                                             " retries)");
  }
  spdlog::warn("model store: {}: {}; retrying from byte {}", job.name, what,
               job.pos.load());
  backoff(job.failures);
  return attempt_result::again;
}

// One GET from job.pos.
caf::expected<attempt_result> get_once(range_job& job) {
  char errbuf[CURL_ERROR_SIZE] = {0};
  header_info headers;
  auto h = make_handle(job.url, job.opts, errbuf, &headers, job.abort);
  if (!h) {
    return make_error(errc::internal, job.name + ": curl_easy_init failed");
  }
  transfer t;
  t.handle = h.get();
  t.fd = job.fd;
  t.offset = job.pos.load();
  t.end = job.end;
  t.expect_206 = job.ranged;
  t.headers = &headers;
  t.abort = job.abort;
  t.prog = &job.prog;
  t.name = &job.name;
  auto range = range_header(t.offset, job.end);
  if (!range.empty()) {
    curl_easy_setopt(h.get(), CURLOPT_RANGE, range.c_str());
  }
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &t);
  auto before = t.offset;
  auto rc = curl_easy_perform(h.get());
  job.pos = t.offset;
  if (t.err) {
    return std::move(t.err);
  }
  if (t.no_ranges) {
    if (job.no_ranges != nullptr) {
      *job.no_ranges = true;
    }
    return make_error(errc::unavailable,
                      job.name + ": server ignored a range request");
  }
  if (job.abort != nullptr && job.abort->value.load()) {
    return make_error(errc::cancelled, job.name + ": aborted");
  }
  long status = 0;
  curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_OK) {
    return after_complete(job, t.started, status, before);
  }
  return after_error(job, h.get(), rc, status, before, errbuf);
}

// Downloads [first, end) (end == 0: to the end of the file) into fd,
// resuming after connection errors. `pos` tracks how far we got, so the
// caller knows which bytes are valid even on failure.
caf::error get_range(const std::string& url, const std::string& name, int fd,
                     uint64_t first, uint64_t end, bool ranged,
                     std::atomic<uint64_t>& pos, const fetch_options& opts,
                     progress_state& prog, abort_flag* abort, bool* no_ranges) {
  range_job job{url, name, fd, end, ranged, pos, opts, prog, abort, no_ranges};
  pos = first;
  for (;;) {
    if (end != 0 && pos.load() >= end) {
      return {};
    }
    auto result = get_once(job);
    if (!result) {
      return std::move(result.error());
    }
    if (*result == attempt_result::done) {
      return {};
    }
  }
}

// One thread's share of a parallel download.
struct part_range {
  uint64_t first = 0;
  uint64_t end = 0;
  std::atomic<uint64_t> pos{0};
  caf::error err;
  bool no_ranges = false;
};

// What the ranges ended with: the first real error (a cancelled range only
// followed another's failure), and how far the file is valid from `have`
// without a hole.
caf::error range_outcome(std::vector<part_range>& ranges, uint64_t have,
                         uint64_t& prefix, bool& no_ranges) {
  caf::error first_err;
  prefix = have;
  bool contiguous = true;
  for (auto& r : ranges) {
    if (r.no_ranges) {
      no_ranges = true;
    }
    if (r.err && !first_err &&
        r.err.code() != static_cast<uint8_t>(errc::cancelled)) {
      first_err = r.err;
    }
    if (contiguous) {
      prefix = r.pos.load();
      contiguous = r.pos.load() >= r.end;
    }
  }
  if (!first_err) {
    for (auto& r : ranges) {
      if (r.err) {
        return r.err;
      }
    }
  }
  return first_err;
}

// Splits [have, size) into ranges fetched by one thread each. On failure the
// .part is cut back to its contiguous valid prefix, so that a later resume
// never trusts a hole.
caf::error get_parallel(const std::string& url, const std::string& name, int fd,
                        uint64_t have, uint64_t size, const fetch_options& opts,
                        progress_state& prog, bool& no_ranges) {
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return make_error(errc::io_error, name + ": preallocate: " + errno_text());
  }
  auto remaining = size - have;
  auto n = std::max<uint64_t>(
      1, std::min<uint64_t>(opts.parallel_ranges, remaining / (64 * 1024)));
  auto chunk = (remaining + n - 1) / n;
  std::vector<part_range> ranges(n);
  for (uint64_t i = 0; i < n; ++i) {
    ranges[i].first = have + i * chunk;
    ranges[i].end = std::min(size, have + (i + 1) * chunk);
    ranges[i].pos = ranges[i].first;
  }
  abort_flag abort;
  std::vector<std::thread> workers;
  workers.reserve(n);
  for (auto& r : ranges) {
    workers.emplace_back([&, rp = &r] {
      rp->err = get_range(url, name, fd, rp->first, rp->end, true, rp->pos,
                          opts, prog, &abort, &rp->no_ranges);
      if (rp->err) {
        abort.value = true;
      }
    });
  }
  for (auto& w : workers) {
    w.join();
  }
  uint64_t prefix = have;
  auto err = range_outcome(ranges, have, prefix, no_ranges);
  if (err && ::ftruncate(fd, static_cast<off_t>(prefix)) != 0) {
    spdlog::warn("model store: {}: truncate: {}", name, errno_text());
  }
  return err;
}

caf::error fetch_http(const std::string& url, const std::string& part,
                      const std::string& name, const fetch_options& opts,
                      progress_state& prog) {
  auto info = probe(url, opts);
  if (info.size > static_cast<int64_t>(opts.max_file_bytes)) {
    return make_error(errc::unavailable,
                      name + ": Content-Length " + std::to_string(info.size) +
                          " from " + url + " is larger than the limit of " +
                          std::to_string(opts.max_file_bytes) + " bytes");
  }
  fd_guard fd{::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
  if (!fd) {
    return make_error(errc::io_error,
                      name + ": cannot create " + part + ": " + errno_text());
  }
  auto have = file_size(fd.get());
  if (have < 0) {
    return make_error(errc::io_error, name + ": stat " + part);
  }
  if (info.size >= 0 && have > info.size) {
    if (::ftruncate(fd.get(), 0) != 0) {
      return make_error(errc::io_error, name + ": truncate: " + errno_text());
    }
    have = 0;
  }
  auto total = info.size >= 0 ? static_cast<uint64_t>(info.size) : 0;
  prog.reset(static_cast<uint64_t>(have), total);
  if (info.size >= 0 && have == info.size) {
    return {}; // a complete .part from an earlier run: just verify it
  }
  if (have > 0) {
    spdlog::info("model store: {}: resuming at byte {}", name, have);
  }
  if (info.size >= 0 && info.ranges && opts.parallel_ranges > 1 &&
      static_cast<uint64_t>(info.size) >= opts.range_threshold) {
    bool no_ranges = false;
    auto err = get_parallel(url, name, fd.get(), static_cast<uint64_t>(have),
                            total, opts, prog, no_ranges);
    if (!err || !no_ranges) {
      return err;
    }
    spdlog::info("model store: {}: server ignores ranges, fetching whole",
                 name);
    have = file_size(fd.get());
    prog.reset(static_cast<uint64_t>(have), total);
  }
  std::atomic<uint64_t> pos{0};
  return get_range(url, name, fd.get(), static_cast<uint64_t>(have), 0, false,
                   pos, opts, prog, nullptr, nullptr);
}

// -- the cache ---------------------------------------------------------------

caf::error sync_path(const std::string& path, int flags) {
  fd_guard fd{::open(path.c_str(), flags | O_CLOEXEC)};
  if (!fd || ::fsync(fd.get()) != 0) {
    return make_error(errc::io_error, "fsync " + path + ": " + errno_text());
  }
  return {};
}

struct source_location {
  bool http = false;
  std::string base; // without a trailing '/'
};

caf::expected<source_location> parse_source(const std::string& source) {
  source_location loc;
  std::string base = source;
  if (starts_with_ci(source, "http://") || starts_with_ci(source, "https://")) {
    loc.http = true;
  } else if (starts_with_ci(source, "file://")) {
    base = source.substr(7);
    if (base.empty() || base.front() != '/') {
      return make_error(errc::invalid_argument,
                        "model source " + source +
                            ": a file:// URL needs an absolute path");
    }
  } else if (source.find("://") != std::string::npos) {
    return make_error(errc::invalid_argument,
                      "model source " + source + ": unsupported scheme");
  }
  if (base.empty()) {
    return make_error(errc::invalid_argument, "model source is empty");
  }
  while (base.size() > 1 && base.back() == '/') {
    base.pop_back();
  }
  loc.base = std::move(base);
  return loc;
}

std::string url_for(const source_location& loc, const std::string& name) {
  std::string url = loc.base;
  size_t pos = 0;
  while (pos <= name.size()) {
    auto end = name.find('/', pos);
    if (end == std::string::npos) {
      end = name.size();
    }
    auto part = name.substr(pos, end - pos);
    char* escaped =
        curl_easy_escape(nullptr, part.c_str(), static_cast<int>(part.size()));
    url += '/';
    url += escaped != nullptr ? escaped : part.c_str();
    curl_free(escaped);
    pos = end + 1;
  }
  return url;
}

// A copy already at `dest` that matches its sha256 (by the verification
// record, else by hashing it) is kept; one that does not is removed.
bool reuse_cached(const std::string& name, const std::string& dest,
                  const std::string& expected_sha, verified_record& rec,
                  fetch_stats& stats) {
  std::error_code ec;
  if (!fs::exists(dest, ec)) {
    return false;
  }
  if (rec.matches(dest, expected_sha)) {
    spdlog::debug("model store: {}: verified copy unchanged, not fetched",
                  name);
    ++stats.files_reused;
    return true;
  }
  auto sha = sha256_file(dest);
  if (sha && *sha == expected_sha) {
    spdlog::debug("model store: {}: cached copy matches, not fetched", name);
    rec.add(dest, expected_sha);
    ++stats.files_reused;
    return true;
  }
  rec.erase(dest);
  spdlog::info("model store: {}: cached copy does not match, fetching again",
               name);
  fs::remove(dest, ec);
  return false;
}

// Fetches `src` into `part` until its sha256 matches: a leftover .part
// that fails verification gets one clean download.
caf::error download_verified(const source_location& loc, const std::string& src,
                             const std::string& part, const std::string& name,
                             const std::string& expected_sha,
                             const fetch_options& opts, progress_state& prog,
                             fetch_stats& stats) {
  std::error_code ec;
  bool had_part = loc.http && fs::exists(part, ec);
  for (;;) {
    auto err = loc.http ? fetch_http(src, part, name, opts, prog)
                        : copy_local(src, part, name, prog);
    stats.bytes_downloaded += prog.take_received();
    prog.reset(0, 0);
    if (err) {
      // A non-empty .part stays for the next attempt to resume; an empty
      // one (a 404, a refused connection) would only be litter.
      if (!loc.http || fs::file_size(part, ec) == 0) {
        fs::remove(part, ec);
      }
      return err;
    }
    auto sha = sha256_file(part);
    if (!sha) {
      fs::remove(part, ec);
      return make_error(errc::io_error, name + ": " + reason_of(sha.error()));
    }
    if (*sha == expected_sha) {
      return {};
    }
    fs::remove(part, ec);
    if (!had_part) {
      return make_error(errc::unavailable, name +
                                               ": sha256 mismatch: expected " +
                                               expected_sha + ", got " + *sha);
    }
    // The leftover .part may have been cut off mid-write by a crash; one
    // clean download settles whether the source is at fault.
    spdlog::warn("model store: {}: resumed download failed verification, "
                 "fetching from scratch",
                 name);
    had_part = false;
  }
}

// Moves the verified .part into place, durably.
caf::error install(const std::string& name, const std::string& part,
                   const std::string& dest) {
  if (auto err = sync_path(part, O_RDONLY)) {
    return err;
  }
  if (::rename(part.c_str(), dest.c_str()) != 0) {
    return make_error(errc::io_error,
                      name + ": rename to " + dest + ": " + errno_text());
  }
  return sync_path(fs::path{dest}.parent_path().string(),
                   O_RDONLY | O_DIRECTORY);
}

caf::error fetch_one(const source_location& loc, const store_file& file,
                     const fs::path& dir, const fetch_options& opts,
                     verified_record& rec, fetch_stats& stats) {
  const auto& name = file.name;
  auto expected_sha = lower(file.sha256);
  auto dest = (dir / name).string();
  auto part = dest + ".part";
  std::error_code ec;
  fs::create_directories(fs::path{dest}.parent_path(), ec);
  if (ec) {
    return make_error(errc::io_error,
                      name + ": cannot create directory " +
                          fs::path{dest}.parent_path().string() + ": " +
                          ec.message());
  }
  if (reuse_cached(name, dest, expected_sha, rec, stats)) {
    return {};
  }
  auto src = loc.http ? url_for(loc, name) : loc.base + "/" + name;
  spdlog::info("model store: fetching {} from {}", name, src);
  progress_state prog{opts, name};
  auto started = std::chrono::steady_clock::now();
  if (auto err = download_verified(loc, src, part, name, expected_sha, opts,
                                   prog, stats)) {
    return err;
  }
  prog.finish();
  if (auto err = install(name, part, dest)) {
    return err;
  }
  rec.add(dest, expected_sha);
  ++stats.files_fetched;
  auto secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  auto size = fs::file_size(dest, ec);
  spdlog::info("model store: fetched {} ({:.1f} MB in {:.2f} s, {:.1f} MB/s)",
               name, size / 1e6, secs, secs > 0 ? size / 1e6 / secs : 0.0);
  return {};
}

} // namespace

caf::error fetch_file(const std::string& source, const std::string& name,
                      const std::string& dest, const fetch_options& opts) {
  global_init();
  if (!valid_name(name)) {
    return make_error(errc::invalid_argument,
                      "model store: invalid file name '" + name + "'");
  }
  auto loc = parse_source(source);
  if (!loc) {
    return loc.error();
  }
  std::error_code ec;
  fs::create_directories(fs::path{dest}.parent_path(), ec);
  if (ec) {
    return make_error(errc::io_error,
                      "cannot create directory " +
                          fs::path{dest}.parent_path().string() + ": " +
                          ec.message());
  }
  auto part = dest + ".part";
  // No checksum to resume against: always a fresh copy.
  fs::remove(part, ec);
  auto src = loc->http ? url_for(*loc, name) : loc->base + "/" + name;
  progress_state prog{opts, name};
  auto err = loc->http ? fetch_http(src, part, name, opts, prog)
                       : copy_local(src, part, name, prog);
  if (err) {
    fs::remove(part, ec);
    return err;
  }
  if (::rename(part.c_str(), dest.c_str()) != 0) {
    auto why = errno_text();
    fs::remove(part, ec);
    return make_error(errc::io_error,
                      name + ": rename to " + dest + ": " + why);
  }
  return {};
}

caf::expected<std::string> sha256_file(const std::string& path) {
  fd_guard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!fd) {
    return make_error(errc::io_error, path + ": " + errno_text());
  }
  // OpenSSL's SHA-256 uses the CPU's SHA extensions: about 5x libsodium's
  // portable one on these machines, and hashing is most of a cold load's
  // verification.
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(),
                                                              EVP_MD_CTX_free};
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return make_error(errc::io_error, path + ": cannot initialise SHA-256");
  }
  std::vector<unsigned char> buf(io_chunk);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  for (;;) {
    auto n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return make_error(errc::io_error, path + ": read: " + errno_text());
    }
    if (n == 0) {
      break;
    }
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1 || len != 32) {
    return make_error(errc::io_error, path + ": SHA-256 failed");
  }
  return to_hex(digest, len);
}

caf::expected<fetch_stats> fetch_model(const std::string& source,
                                       const std::string& model,
                                       uint64_t version,
                                       const std::vector<store_file>& files,
                                       const fetch_options& opts) {
  global_init();
  if (opts.cache_dir.empty()) {
    return make_error(errc::invalid_argument, "model store: no cache_dir");
  }
  if (!valid_name(model)) {
    return make_error(errc::invalid_argument,
                      "model store: invalid model name '" + model + "'");
  }
  // Check the whole manifest first: a bad entry fails before any download.
  for (const auto& f : files) {
    if (!valid_name(f.name)) {
      return make_error(errc::invalid_argument,
                        "model store: file name '" + f.name +
                            "' must be relative and stay inside the version "
                            "directory");
    }
    if (!valid_sha256(f.sha256)) {
      return make_error(errc::invalid_argument, f.name + ": sha256 '" +
                                                    f.sha256 +
                                                    "' is not 64 hex digits");
    }
  }
  auto loc = parse_source(source);
  if (!loc) {
    return loc.error();
  }
  auto dir = fs::path{opts.cache_dir} / model / std::to_string(version);
  fetch_stats stats;
  auto rec = verified_record::load(dir.string());
  for (const auto& f : files) {
    if (auto err = fetch_one(*loc, f, dir, opts, rec, stats)) {
      rec.save();
      return err;
    }
  }
  rec.save();
  return stats;
}

} // namespace shoal
