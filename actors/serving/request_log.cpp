#include "actors/serving/request_log.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

// A JSON string: quotes, backslashes and bytes outside printable ASCII
// escaped, so that a client's bytes can never break a line.
void put_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch >= 0x7f) {
      out += "\\u00";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  out += '"';
}

void put_id(std::string& out, const request_id* id) {
  if (!id || id->k == request_id::kind::nil) {
    out += "null";
  } else if (id->k == request_id::kind::num) {
    out += std::to_string(id->num);
  } else {
    put_json_string(out, id->str);
  }
}

// RFC 3339 in UTC with milliseconds.
void put_time(std::string& out, int64_t unix_ns) {
  auto secs = static_cast<std::time_t>(unix_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ns / 1'000'000 % 1000));
  out += buf;
}

void put_uint(std::string& out, const char* key, uint64_t v) {
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(v);
}

void put_str(std::string& out, const char* key, std::string_view v) {
  out += ",\"";
  out += key;
  out += "\":";
  put_json_string(out, v);
}

} // namespace

caf::expected<std::shared_ptr<request_log>> request_log::open(std::string file,
                                                              double sample) {
  std::shared_ptr<request_log> log{new request_log};
  log->all_ = sample >= 1.0;
  log->threshold_ =
      static_cast<uint64_t>(std::ldexp(std::clamp(sample, 0.0, 1.0), 63));
  if (file.empty()) {
    return log;
  }
  try {
    log->out_ = std::make_shared<spdlog::logger>(
        "requests", std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
    log->out_->set_pattern("%v");
    log->out_->set_level(spdlog::level::info);
    log->out_->flush_on(spdlog::level::info);
  } catch (const spdlog::spdlog_ex& e) {
    return make_error(errc::io_error,
                      "log.requests_file " + file + ": " + e.what());
  }
  return log;
}

bool request_log::sampled() noexcept {
  if (all_) {
    return true;
  }
  // xorshift64*, one state per thread: no lock, no shared cache line.
  thread_local uint64_t state =
      0x9e3779b97f4a7c15ull ^
      static_cast<uint64_t>(
          std::chrono::steady_clock::now().time_since_epoch().count());
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return ((state * 0x2545f4914f6cdd1dull) >> 1) < threshold_;
}

std::string request_log::format(const request_record& rec, int64_t unix_ns) {
  std::string out;
  out.reserve(256 + rec.tenant.size() + rec.model.size());
  out += "{\"time\":";
  put_time(out, unix_ns);
  out += ",\"id\":";
  put_id(out, rec.id);
  put_str(out, "tenant", rec.tenant);
  put_str(out, "model", rec.model);
  if (rec.version) {
    put_uint(out, "version", *rec.version);
  } else {
    out += ",\"version\":null";
  }
  put_str(out, "op", to_string(rec.op));
  put_str(out, "status", to_string(rec.code));
  put_str(out, "source",
          rec.source == reply_source::none ? std::string_view{"none"}
                                           : to_string(rec.source));
  put_uint(out, "queue_us", rec.timing_us.queue_us);
  put_uint(out, "compute_us", rec.timing_us.compute_us);
  put_uint(out, "total_us", rec.timing_us.total_us);
  put_uint(out, "bytes_in", rec.bytes_in);
  put_uint(out, "bytes_out", rec.bytes_out);
  out += '}';
  return out;
}

void request_log::write(const request_record& rec) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto line = format(
      rec, std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
  if (out_) {
    out_->info(line);
  } else {
    spdlog::info("request {}", line);
  }
}

} // namespace shoal
