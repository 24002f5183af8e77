#include "runtime/jobs/sqlite_job_store.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

namespace fs = std::filesystem;

constexpr const char* schema = R"(
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  id TEXT NOT NULL,
  state INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  model TEXT NOT NULL,
  version INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  done INTEGER NOT NULL DEFAULT 0,
  total INTEGER NOT NULL DEFAULT 0,
  request BLOB NOT NULL,
  code INTEGER NOT NULL DEFAULT 0,
  error TEXT NOT NULL DEFAULT '',
  result BLOB,
  result_file TEXT,
  UNIQUE (tenant, id));
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (state, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (state, updated_ms);
)";

// The columns every read returns, in job_record order.
constexpr const char* columns =
    "seq, tenant, id, state, priority, model, version, created_ms, "
    "updated_ms, done, total, code, error";

// One prepared statement; finalized when it goes.
class stmt {
public:
  stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr);
  }
  ~stmt() { sqlite3_finalize(s_); }
  stmt(const stmt&) = delete;
  stmt& operator=(const stmt&) = delete;

  bool ok() const noexcept { return s_ != nullptr; }
  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_STATIC);
    return *this;
  }
  stmt& blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_STATIC);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return rc_ = sqlite3_step(s_); }
  int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  std::string text(int c) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(s_, c));
    return p ? std::string(p, sqlite3_column_bytes(s_, c)) : std::string{};
  }
  bool null(int c) const { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
  int rc() const noexcept { return rc_; }

private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

job_record read_row(const stmt& q) {
  job_record r;
  r.seq = static_cast<uint64_t>(q.i64(0));
  r.tenant = q.text(1);
  r.id = q.text(2);
  r.state = static_cast<job_state>(q.i64(3));
  r.priority = static_cast<uint8_t>(q.i64(4));
  r.model = q.text(5);
  r.version = static_cast<uint64_t>(q.i64(6));
  r.created_ms = q.i64(7);
  r.updated_ms = q.i64(8);
  r.done = static_cast<uint64_t>(q.i64(9));
  r.total = static_cast<uint64_t>(q.i64(10));
  r.code = static_cast<uint8_t>(q.i64(11));
  r.error = q.text(12);
  return r;
}

// Writes `bytes` to `file` and syncs it (and its directory) before the row
// naming it is committed.
caf::error write_synced(const fs::path& file, const std::string& bytes) {
  auto tmp = file.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(errc::io_error, "cannot write job result " + tmp + ": " +
                                          std::strerror(errno));
  }
  size_t off = 0;
  while (off < bytes.size()) {
    auto n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n <= 0) {
      ::close(fd);
      return make_error(errc::io_error, "cannot write job result " + tmp +
                                            ": " + std::strerror(errno));
    }
    off += static_cast<size_t>(n);
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (!synced || ec) {
    return make_error(errc::io_error, "cannot write job result " +
                                          file.string() + ": " +
                                          (ec ? ec.message() : "fsync failed"));
  }
  int dfd = ::open(file.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

class sqlite_job_store : public job_store {
public:
  sqlite_job_store(sqlite3* db, sqlite_job_store_config cfg)
      : db_(db), cfg_(std::move(cfg)) {
    // nop
  }

  ~sqlite_job_store() override { sqlite3_close_v2(db_); }

  caf::expected<std::pair<job_record, bool>> insert(job_record rec) override;
  caf::expected<std::vector<std::pair<job_record, bool>>>
  insert_all(std::vector<job_record> recs) override;
  caf::expected<std::optional<job_record>> get(const std::string& tenant,
                                               const std::string& id,
                                               bool with_result) override;
  caf::error set_progress(const std::vector<job_progress>& p) override;
  caf::expected<bool> finish(const job_record& outcome) override;
  caf::expected<std::vector<job_record>>
  list(const std::string& tenant, uint64_t limit,
       const std::string& after) override;
  caf::expected<std::vector<job_record>> open_jobs() override;
  caf::expected<uint64_t> expire(int64_t before_ms) override;
  caf::expected<std::vector<uint64_t>> counts() override;

  // errc::io_error naming the database and what failed.
  caf::error fail(const std::string& what) const {
    return make_error(errc::io_error, "job store " + cfg_.path + ": " + what +
                                          ": " + sqlite3_errmsg(db_));
  }

  caf::error exec(const char* sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string why = msg ? msg : "unknown error";
      sqlite3_free(msg);
      return make_error(errc::io_error, "job store " + cfg_.path + ": " + why);
    }
    return {};
  }

  fs::path result_path(uint64_t seq) const {
    return fs::path{cfg_.results_dir} / (std::to_string(seq) + ".result");
  }

private:
  caf::expected<std::optional<job_record>> find(const std::string& tenant,
                                                const std::string& id);
  caf::error read_result(job_record& r, const stmt& q, int col_result,
                         int col_file);

  sqlite3* db_;
  sqlite_job_store_config cfg_;
};

caf::expected<std::optional<job_record>>
sqlite_job_store::find(const std::string& tenant, const std::string& id) {
  auto sql = std::string{"SELECT "} + columns +
             " FROM jobs WHERE tenant = ?1 AND id = ?2";
  stmt q{db_, sql.c_str()};
  if (!q.ok()) {
    return fail("read");
  }
  q.bind(1, tenant).bind(2, id);
  auto rc = q.step();
  if (rc == SQLITE_DONE) {
    return std::optional<job_record>{};
  }
  if (rc != SQLITE_ROW) {
    return fail("read");
  }
  return std::optional<job_record>{read_row(q)};
}

caf::expected<std::pair<job_record, bool>>
sqlite_job_store::insert(job_record rec) {
  stmt q{db_, "INSERT INTO jobs (tenant, id, state, priority, model, "
              "version, created_ms, updated_ms, request) VALUES (?1, ?2, ?3, "
              "?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (tenant, id) DO NOTHING"};
  if (!q.ok()) {
    return fail("insert");
  }
  q.bind(1, rec.tenant).bind(2, rec.id);
  q.bind(3, static_cast<int64_t>(job_state::queued)).bind(4, rec.priority);
  q.bind(5, rec.model).bind(6, static_cast<int64_t>(rec.version));
  q.bind(7, rec.created_ms).bind(8, rec.created_ms).blob(9, rec.request);
  if (q.step() != SQLITE_DONE) {
    return fail("insert");
  }
  if (sqlite3_changes(db_) == 0) {
    auto old = find(rec.tenant, rec.id);
    if (!old) {
      return old.error();
    }
    if (!*old) {
      return fail("insert (job vanished)");
    }
    return std::make_pair(std::move(**old), false);
  }
  rec.seq = static_cast<uint64_t>(sqlite3_last_insert_rowid(db_));
  rec.state = job_state::queued;
  rec.updated_ms = rec.created_ms;
  return std::make_pair(std::move(rec), true);
}

caf::expected<std::vector<std::pair<job_record, bool>>>
sqlite_job_store::insert_all(std::vector<job_record> recs) {
  std::vector<std::pair<job_record, bool>> out;
  if (auto err = exec("BEGIN IMMEDIATE")) {
    return err;
  }
  for (auto& r : recs) {
    auto one = insert(std::move(r));
    if (!one) {
      exec("ROLLBACK");
      return one.error();
    }
    out.push_back(std::move(*one));
  }
  if (auto err = exec("COMMIT")) {
    exec("ROLLBACK");
    return err;
  }
  return out;
}

caf::error sqlite_job_store::read_result(job_record& r, const stmt& q,
                                         int col_result, int col_file) {
  if (!q.null(col_file)) {
    auto file = q.text(col_file);
    std::ifstream in{file, std::ios::binary};
    if (!in) {
      return make_error(errc::internal, "result file " + file + " of job " +
                                            r.id + " cannot be read");
    }
    r.result.assign(std::istreambuf_iterator<char>{in}, {});
    return {};
  }
  r.result = q.text(col_result);
  return {};
}

caf::expected<std::optional<job_record>>
sqlite_job_store::get(const std::string& tenant, const std::string& id,
                      bool with_result) {
  auto sql = std::string{"SELECT "} + columns +
             ", result, result_file, request FROM jobs WHERE tenant = ?1 "
             "AND id = ?2";
  stmt q{db_, sql.c_str()};
  if (!q.ok()) {
    return fail("read");
  }
  q.bind(1, tenant).bind(2, id);
  auto rc = q.step();
  if (rc == SQLITE_DONE) {
    return std::optional<job_record>{};
  }
  if (rc != SQLITE_ROW) {
    return fail("read");
  }
  auto r = read_row(q);
  if (with_result) {
    if (auto err = read_result(r, q, 13, 14)) {
      return err;
    }
    r.request = q.text(15);
  }
  return std::optional<job_record>{std::move(r)};
}

caf::error sqlite_job_store::set_progress(const std::vector<job_progress>& p) {
  if (p.empty()) {
    return {};
  }
  if (auto err = exec("BEGIN")) {
    return err;
  }
  {
    stmt q{db_, "UPDATE jobs SET state = 1, done = ?3, total = ?4, "
                "updated_ms = ?5 "
                "WHERE tenant = ?1 AND id = ?2 AND state < 2"};
    bool ok = q.ok();
    for (size_t i = 0; ok && i < p.size(); ++i) {
      auto& x = p[i];
      q.reset();
      q.bind(1, x.tenant).bind(2, x.id).bind(3, static_cast<int64_t>(x.done));
      q.bind(4, static_cast<int64_t>(x.total)).bind(5, x.updated_ms);
      ok = q.step() == SQLITE_DONE;
    }
    if (!ok) {
      auto err = fail("progress");
      exec("ROLLBACK");
      return err;
    }
  }
  return exec("COMMIT");
}

caf::expected<bool> sqlite_job_store::finish(const job_record& o) {
  bool to_file = o.result.size() > cfg_.max_result_bytes;
  std::string file;
  if (to_file) {
    auto old = find(o.tenant, o.id);
    if (!old) {
      return old.error();
    }
    if (!*old || is_final((*old)->state)) {
      return false;
    }
    file = result_path((*old)->seq).string();
    if (auto err = write_synced(file, o.result)) {
      return err;
    }
  }
  stmt q{db_, "UPDATE jobs SET state = ?3, code = ?4, error = ?5, result = "
              "?6, result_file = ?7, updated_ms = ?8, done = ?9, total = ?10 "
              "WHERE tenant = ?1 AND id = ?2 AND state < 2"};
  if (!q.ok()) {
    return fail("finish");
  }
  q.bind(1, o.tenant).bind(2, o.id).bind(3, static_cast<int64_t>(o.state));
  q.bind(4, o.code).bind(5, o.error).bind(8, o.updated_ms);
  q.bind(9, static_cast<int64_t>(o.done))
      .bind(10, static_cast<int64_t>(o.total));
  if (to_file) {
    q.bind(7, file);
  } else {
    q.blob(6, o.result);
  }
  if (q.step() != SQLITE_DONE) {
    return fail("finish");
  }
  return sqlite3_changes(db_) > 0;
}

caf::expected<std::vector<job_record>>
sqlite_job_store::list(const std::string& tenant, uint64_t limit,
                       const std::string& after) {
  auto sql = std::string{"SELECT "} + columns +
             " FROM jobs WHERE tenant = ?1 AND seq < coalesce((SELECT seq "
             "FROM jobs WHERE tenant = ?1 AND id = ?2), 9223372036854775807) "
             "ORDER BY seq DESC LIMIT ?3";
  stmt q{db_, sql.c_str()};
  if (!q.ok()) {
    return fail("list");
  }
  q.bind(1, tenant).bind(2, after).bind(3, static_cast<int64_t>(limit));
  std::vector<job_record> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    out.push_back(read_row(q));
  }
  if (rc != SQLITE_DONE) {
    return fail("list");
  }
  return out;
}

caf::expected<std::vector<job_record>> sqlite_job_store::open_jobs() {
  auto sql = std::string{"SELECT "} + columns +
             ", request FROM jobs WHERE state < 2 ORDER BY priority, seq";
  stmt q{db_, sql.c_str()};
  if (!q.ok()) {
    return fail("read open jobs");
  }
  std::vector<job_record> out;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    out.push_back(read_row(q));
    out.back().request = q.text(13);
  }
  if (rc != SQLITE_DONE) {
    return fail("read open jobs");
  }
  return out;
}

caf::expected<uint64_t> sqlite_job_store::expire(int64_t before_ms) {
  std::vector<std::string> files;
  {
    stmt q{db_, "SELECT result_file FROM jobs WHERE state >= 2 AND "
                "updated_ms < ?1 AND result_file IS NOT NULL"};
    if (!q.ok()) {
      return fail("expire");
    }
    q.bind(1, before_ms);
    while (q.step() == SQLITE_ROW) {
      files.push_back(q.text(0));
    }
  }
  stmt d{db_, "DELETE FROM jobs WHERE state >= 2 AND updated_ms < ?1"};
  if (!d.ok()) {
    return fail("expire");
  }
  d.bind(1, before_ms);
  if (d.step() != SQLITE_DONE) {
    return fail("expire");
  }
  auto n = static_cast<uint64_t>(sqlite3_changes(db_));
  // Files go after the rows: a crash in between leaves an orphan file,
  // never a row naming a missing one.
  for (auto& f : files) {
    std::error_code ec;
    fs::remove(f, ec);
  }
  return n;
}

caf::expected<std::vector<uint64_t>> sqlite_job_store::counts() {
  stmt q{db_, "SELECT state, count(*) FROM jobs GROUP BY state"};
  if (!q.ok()) {
    return fail("count");
  }
  std::vector<uint64_t> out(5, 0);
  while (q.step() == SQLITE_ROW) {
    auto s = q.i64(0);
    if (s >= 0 && s < 5) {
      out[static_cast<size_t>(s)] = static_cast<uint64_t>(q.i64(1));
    }
  }
  return out;
}

// The database's own check: a damaged file must stop the node.
caf::error check_integrity(sqlite_job_store& store, sqlite3* db,
                           const std::string& path) {
  stmt q{db, "PRAGMA quick_check"};
  if (!q.ok() || q.step() != SQLITE_ROW) {
    return store.fail("integrity check");
  }
  auto verdict = q.text(0);
  if (verdict != "ok") {
    return make_error(errc::io_error,
                      "job store " + path + " is damaged: " + verdict);
  }
  return {};
}

} // namespace

caf::expected<job_store_ptr>
open_sqlite_job_store(const sqlite_job_store_config& given) {
  auto cfg = given;
  if (cfg.results_dir.empty()) {
    cfg.results_dir = cfg.path + ".results";
  }
  std::error_code ec;
  auto parent = fs::path{cfg.path}.parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
  }
  fs::create_directories(cfg.results_dir, ec);
  if (ec) {
    return make_error(errc::io_error, "jobs.results_dir " + cfg.results_dir +
                                          ": " + ec.message());
  }
  sqlite3* db = nullptr;
  auto rc =
      sqlite3_open_v2(cfg.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return make_error(errc::io_error,
                      "job store " + cfg.path + " cannot be opened: " + why);
  }
  sqlite3_busy_timeout(db, 5000);
  auto path = cfg.path;
  auto store = std::make_shared<sqlite_job_store>(db, std::move(cfg));
  caf::error err;
  (err = store->exec("PRAGMA journal_mode = WAL")) ||
      (err = store->exec("PRAGMA synchronous = FULL")) ||
      (err = check_integrity(*store, db, path)) || (err = store->exec(schema));
  if (err) {
    return err;
  }
  return job_store_ptr{std::move(store)};
}

} // namespace shoal
