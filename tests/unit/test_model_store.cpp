// The model store against a local directory and against
// tests/integration/range_server.py on 127.0.0.1 (ranges, faults, 404).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/wire/error.hpp"
#include "runtime/model/model_store.hpp"

namespace fs = std::filesystem;
using namespace shoal;

namespace {

std::string random_bytes(size_t size, uint64_t seed) {
  std::mt19937_64 gen{seed};
  std::string out(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    auto x = gen();
    std::memcpy(out.data() + i, &x, 8);
  }
  for (size_t i = size - size % 8; i < size; ++i) {
    out[i] = static_cast<char>(gen());
  }
  return out;
}

// Computed here, not with sha256_file, so the test does not trust the code
// under test for its expectations.
std::string sha_of(const std::string& data) {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(
      digest, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (auto b : digest) {
    hex += digits[b >> 4];
    hex += digits[b & 0x0f];
  }
  return hex;
}

void write_file(const fs::path& path, const std::string& data) {
  fs::create_directories(path.parent_path());
  std::ofstream out{path, std::ios::binary};
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string read_file(const fs::path& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in{path};
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    out.push_back(line);
  }
  return out;
}

size_t count_if_line(const std::vector<std::string>& lines,
                     const std::string& needle) {
  size_t n = 0;
  for (auto& l : lines) {
    if (l.find(needle) != std::string::npos) {
      ++n;
    }
  }
  return n;
}

// Every regular file under dir (an empty cache has none).
std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) {
    return out;
  }
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) {
      out.push_back(e.path().string());
    }
  }
  return out;
}

// range_server.py as a child process, stopped by pid when the test ends.
class range_server {
public:
  range_server(const fs::path& dir, const fs::path& log,
               std::vector<std::string> extra = {}) {
    const char* py = std::getenv("PYTHON");
    const char* root = std::getenv("SOURCE_ROOT");
    std::string python = py != nullptr ? py : "/usr/bin/python3";
    std::string script = std::string{root != nullptr ? root : "."} +
                         "/tests/integration/range_server.py";
    std::vector<std::string> args{python,  script,      "--port",
                                  "0",     "--dir",     dir.string(),
                                  "--log", log.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    int fds[2];
    if (::pipe(fds) != 0) {
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args) {
        argv.push_back(a.data());
      }
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    // The first stdout line is the port; give the interpreter 10 s.
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (line.find('\n') == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fds[0], POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0) {
        continue;
      }
      char buf[64];
      auto n = ::read(fds[0], buf, sizeof(buf));
      if (n <= 0) {
        break;
      }
      line.append(buf, static_cast<size_t>(n));
    }
    ::close(fds[0]);
    port_ = std::atoi(line.c_str());
  }

  ~range_server() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  int port() const { return port_; }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

private:
  pid_t pid_ = -1;
  int port_ = 0;
};

class model_store_test : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shoal-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    repo_ = root_ / "repo" / "m" / "1";
    cache_ = root_ / "cache";
    log_ = root_ / "server.log";
    opts_.cache_dir = cache_.string();
    opts_.timeout = std::chrono::seconds{5};
  }

  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  store_file add(const std::string& name, const std::string& data) {
    write_file(repo_ / name, data);
    return {name, sha_of(data)};
  }

  fs::path cached(const std::string& name) const {
    return cache_ / "m" / "1" / name;
  }

  fs::path root_;
  fs::path repo_;
  fs::path cache_;
  fs::path log_;
  fetch_options opts_;
};

TEST_F(model_store_test, sha256_file_matches_libsodium) {
  auto data = random_bytes(3 * 1024 * 1024 + 7, 1);
  write_file(root_ / "f", data);
  auto sha = sha256_file((root_ / "f").string());
  ASSERT_TRUE(sha) << reason_of(sha.error());
  EXPECT_EQ(*sha, sha_of(data));
  EXPECT_FALSE(sha256_file((root_ / "missing").string()));
}

TEST_F(model_store_test, local_path_and_file_url) {
  auto a = random_bytes(1000, 2);
  auto b = random_bytes(200000, 3);
  std::vector<store_file> files{add("model.safetensors", a),
                                add("sub/vocab.bin", b)};
  auto res = fetch_model(repo_.string(), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 2u);
  EXPECT_EQ(res->files_reused, 0u);
  EXPECT_EQ(res->bytes_downloaded, a.size() + b.size());
  EXPECT_EQ(read_file(cached("model.safetensors")), a);
  EXPECT_EQ(read_file(cached("sub/vocab.bin")), b);
  // A second fetch finds both in the cache.
  res = fetch_model(repo_.string(), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 0u);
  EXPECT_EQ(res->files_reused, 2u);
  EXPECT_EQ(res->bytes_downloaded, 0u);
  // file:// into a fresh cache.
  opts_.cache_dir = (root_ / "cache2").string();
  res = fetch_model("file://" + repo_.string() + "/", "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 2u);
  EXPECT_EQ(read_file(root_ / "cache2" / "m" / "1" / "sub/vocab.bin"), b);
  // A changed cached file is replaced.
  write_file(root_ / "cache2" / "m" / "1" / "sub/vocab.bin", "garbage");
  res = fetch_model("file://" + repo_.string(), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 1u);
  EXPECT_EQ(res->files_reused, 1u);
  EXPECT_EQ(read_file(root_ / "cache2" / "m" / "1" / "sub/vocab.bin"), b);
}

TEST_F(model_store_test, http_parallel_ranges_then_sync) {
  auto big = random_bytes(20 * 1024 * 1024 + 12345, 4);
  auto small = random_bytes(5000, 5);
  std::vector<store_file> files{add("model.safetensors", big),
                                add("model.toml", small)};
  range_server srv{root_ / "repo", log_};
  ASSERT_GT(srv.port(), 0);
  uint64_t last_done = 0;
  uint64_t last_total = 0;
  std::atomic<int> calls{0};
  opts_.progress = [&](const std::string& file, uint64_t done, uint64_t total) {
    if (file == "model.safetensors") {
      ++calls;
      last_done = done;
      last_total = total;
    }
  };
  auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 2u);
  EXPECT_EQ(res->bytes_downloaded, big.size() + small.size());
  EXPECT_EQ(read_file(cached("model.safetensors")), big);
  EXPECT_EQ(read_file(cached("model.toml")), small);
  EXPECT_FALSE(fs::exists(cached("model.safetensors.part")));
  EXPECT_GT(calls.load(), 1);
  EXPECT_EQ(last_done, big.size());
  EXPECT_EQ(last_total, big.size());
  auto lines = read_lines(log_);
  EXPECT_GE(count_if_line(lines, "GET /m/1/model.safetensors bytes="), 2u);
  EXPECT_EQ(count_if_line(lines, "GET /m/1/model.toml bytes="), 0u);
  auto gets = count_if_line(lines, "GET ");
  auto heads = count_if_line(lines, "HEAD ");
  // Sync semantics: nothing is fetched again.
  res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 0u);
  EXPECT_EQ(res->files_reused, 2u);
  EXPECT_EQ(res->bytes_downloaded, 0u);
  lines = read_lines(log_);
  EXPECT_EQ(count_if_line(lines, "GET "), gets);
  EXPECT_EQ(count_if_line(lines, "HEAD "), heads);
}

TEST_F(model_store_test, wrong_checksum_leaves_nothing) {
  auto big = random_bytes(9 * 1024 * 1024, 6);
  auto small = random_bytes(4096, 7);
  auto f1 = add("model.safetensors", big);
  auto f2 = add("model.toml", small);
  f1.sha256 = sha_of("something else");
  range_server srv{root_ / "repo", log_};
  ASSERT_GT(srv.port(), 0);
  for (auto& files :
       {std::vector<store_file>{f1}, std::vector<store_file>{f2, f1}}) {
    auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
    ASSERT_FALSE(res);
    auto why = reason_of(res.error());
    EXPECT_EQ(res.error(), make_error(errc::unavailable, ""));
    EXPECT_NE(why.find("model.safetensors: sha256 mismatch: expected " +
                       f1.sha256 + ", got " + sha_of(big)),
              std::string::npos)
        << why;
    EXPECT_FALSE(fs::exists(cached("model.safetensors")));
    EXPECT_FALSE(fs::exists(cached("model.safetensors.part")));
  }
  // Only the good file of the second attempt remains (and the record of
  // what was verified).
  auto left = files_under(cache_);
  std::erase_if(left, [](const std::string& p) {
    return fs::path{p}.filename() == ".shoal-verified";
  });
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0], cached("model.toml").string());
  // The same for a local source: nothing in a fresh cache.
  opts_.cache_dir = (root_ / "cache2").string();
  auto res = fetch_model(repo_.string(), "m", 1, {f1}, opts_);
  ASSERT_FALSE(res);
  EXPECT_NE(reason_of(res.error()).find("sha256 mismatch"), std::string::npos);
  EXPECT_TRUE(files_under(root_ / "cache2").empty());
}

TEST_F(model_store_test, dropped_connection_is_resumed) {
  auto big = random_bytes(12 * 1024 * 1024, 8);
  auto mid = random_bytes(3 * 1024 * 1024, 9);
  std::vector<store_file> files{add("model.safetensors", big),
                                add("tokenizer.bin", mid)};
  range_server srv{root_ / "repo", log_, {"--drop-after", "1000000"}};
  ASSERT_GT(srv.port(), 0);
  auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(res->files_fetched, 2u);
  EXPECT_EQ(read_file(cached("model.safetensors")), big);
  EXPECT_EQ(read_file(cached("tokenizer.bin")), mid);
  auto lines = read_lines(log_);
  // The sequential download resumed where the connection broke.
  EXPECT_EQ(count_if_line(lines, "GET /m/1/tokenizer.bin bytes=1000000- 206"),
            1u);
  EXPECT_GE(count_if_line(lines, "GET /m/1/model.safetensors bytes="), 5u);
}

TEST_F(model_store_test, partial_file_is_resumed_or_restarted) {
  auto data = random_bytes(2 * 1024 * 1024, 10);
  std::vector<store_file> files{add("model.safetensors", data)};
  write_file(cached("model.safetensors.part"), data.substr(0, 700000));
  {
    range_server srv{root_ / "repo", log_};
    auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
    ASSERT_TRUE(res) << reason_of(res.error());
    EXPECT_EQ(res->bytes_downloaded, data.size() - 700000);
    EXPECT_EQ(read_file(cached("model.safetensors")), data);
    EXPECT_EQ(count_if_line(read_lines(log_), "bytes=700000- 206"), 1u);
  }
  // A server without range support: the .part is discarded.
  fs::remove(cached("model.safetensors"));
  write_file(cached("model.safetensors.part"), data.substr(0, 700000));
  range_server srv{root_ / "repo", log_, {"--ignore-range"}};
  auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(read_file(cached("model.safetensors")), data);
  // A .part with garbage (a crash mid-write) costs one clean retry.
  fs::remove(cached("model.safetensors"));
  write_file(cached("model.safetensors.part"), std::string(700000, 'x'));
  res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_TRUE(res) << reason_of(res.error());
  EXPECT_EQ(read_file(cached("model.safetensors")), data);
}

TEST_F(model_store_test, path_traversal_is_refused) {
  auto data = random_bytes(100, 11);
  auto good = add("model.safetensors", data);
  for (std::string bad :
       {"../evil", "a/../../evil", "/etc/passwd", "", "a//b", "./x"}) {
    auto res =
        fetch_model(repo_.string(), "m", 1, {good, {bad, good.sha256}}, opts_);
    ASSERT_FALSE(res) << bad;
    EXPECT_EQ(res.error(), make_error(errc::invalid_argument, ""));
    EXPECT_NE(reason_of(res.error()).find("'" + bad + "'"), std::string::npos)
        << reason_of(res.error());
  }
  EXPECT_FALSE(fetch_model(repo_.string(), "../m", 1, {good}, opts_));
  EXPECT_FALSE(fetch_model(repo_.string(), "m", 1, {{"x", "abc"}}, opts_));
  EXPECT_FALSE(fetch_model("ftp://host/x", "m", 1, {good}, opts_));
  // Nothing was fetched: the manifest is checked before any download.
  EXPECT_TRUE(files_under(cache_).empty());
}

TEST_F(model_store_test, not_found_names_status_and_file) {
  range_server srv{root_ / "repo", log_};
  ASSERT_GT(srv.port(), 0);
  std::vector<store_file> files{{"missing.safetensors", sha_of("x")}};
  auto start = std::chrono::steady_clock::now();
  auto res = fetch_model(srv.url("/m/1"), "m", 1, files, opts_);
  ASSERT_FALSE(res);
  auto why = reason_of(res.error());
  EXPECT_NE(why.find("missing.safetensors"), std::string::npos) << why;
  EXPECT_NE(why.find("HTTP 404"), std::string::npos) << why;
  EXPECT_NE(why.find(srv.url("/m/1/missing.safetensors")), std::string::npos)
      << why;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds{2});
  EXPECT_TRUE(files_under(cache_).empty());
  // Local sources too.
  res = fetch_model(repo_.string(), "m", 1, files, opts_);
  ASSERT_FALSE(res);
  EXPECT_NE(reason_of(res.error()).find("missing.safetensors"),
            std::string::npos);
  EXPECT_TRUE(files_under(cache_).empty());
}

TEST_F(model_store_test, refused_connection_fails_after_retries) {
  opts_.retries = 1;
  // Port 1 on loopback: nothing listens there.
  auto res = fetch_model("http://127.0.0.1:1/m/1", "m", 1,
                         {{"model.safetensors", sha_of("x")}}, opts_);
  ASSERT_FALSE(res);
  EXPECT_NE(reason_of(res.error()).find("model.safetensors"),
            std::string::npos);
}

} // namespace

// A local repository is verified in place: the first load hashes, a second
// load of the unchanged file does not, and a file changed behind our back
// (same size, new contents) is hashed again and refused.
TEST_F(model_store_test, local_repository_verified_in_place_once) {
  auto data = random_bytes(300000, 9);
  auto f = add("model.safetensors", data);
  model_spec spec;
  spec.name = "m";
  spec.version = 1;
  spec.dir = repo_.string();
  spec.files = {{f.name, f.sha256}};
  store_config cfg;
  cfg.repository = (root_ / "repo").string();
  cfg.cache_dir = cache_.string();
  fetch_stats st;
  ASSERT_FALSE(prepare_model(spec, cfg, {}, &st));
  EXPECT_EQ(st.files_fetched, 1u); // hashed
  EXPECT_EQ(st.files_reused, 0u);
  EXPECT_FALSE(fs::exists(cached("model.safetensors"))) << "loaded in place";
  ASSERT_FALSE(prepare_model(spec, cfg, {}, &st));
  EXPECT_EQ(st.files_fetched, 0u);
  EXPECT_EQ(st.files_reused, 1u); // the record matched: no hash
  // Same size, different bytes: the changed mtime/ctime forces a re-hash.
  std::this_thread::sleep_for(std::chrono::milliseconds{20});
  data[1000] ^= 1;
  write_file(repo_ / "model.safetensors", data);
  auto err = prepare_model(spec, cfg, {}, &st);
  ASSERT_TRUE(err);
  EXPECT_EQ(to_status(err), status::unavailable);
  EXPECT_NE(reason_of(err).find("model.safetensors"), std::string::npos)
      << reason_of(err);
  EXPECT_NE(reason_of(err).find("sha256 mismatch"), std::string::npos);
  // Still refused the next time: a failed file is never recorded.
  EXPECT_TRUE(prepare_model(spec, cfg, {}, &st));
}

// A remote version goes through fetch_model; a second prepare reuses the
// verified copy without hashing or fetching it.
TEST_F(model_store_test, remote_prepare_fetches_once) {
  auto data = random_bytes(100000, 10);
  auto f = add("w.bin", data);
  model_spec spec;
  spec.name = "m";
  spec.version = 1;
  spec.dir = (cache_ / "m" / "1").string();
  spec.source = "file://" + repo_.string();
  spec.files = {{f.name, f.sha256}};
  store_config cfg;
  cfg.repository = "file://" + (root_ / "repo").string();
  cfg.cache_dir = cache_.string();
  EXPECT_TRUE(is_remote_repository(cfg.repository));
  EXPECT_FALSE(is_remote_repository(repo_.string()));
  fetch_stats st;
  ASSERT_FALSE(prepare_model(spec, cfg, {}, &st));
  EXPECT_EQ(st.files_fetched, 1u);
  EXPECT_EQ(read_file(cached("w.bin")), data);
  ASSERT_FALSE(prepare_model(spec, cfg, {}, &st));
  EXPECT_EQ(st.files_reused, 1u);
  EXPECT_EQ(st.bytes_downloaded, 0u);
}
