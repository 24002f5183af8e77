#include "net/security/client_registry.hpp"

#include <sys/stat.h>

#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

caf::error bad_entry(const std::string& path, size_t index,
                     const std::string& name, const std::string& what) {
  auto which = "[[client]] #" + std::to_string(index + 1) +
               (name.empty() ? "" : " (" + name + ")");
  return make_error(errc::config_invalid, "security.clients_file: " + path +
                                              ": " + which + ": " + what);
}

caf::expected<client_entry> parse_entry(const std::string& path, size_t index,
                                        const toml::table& t) {
  client_entry e;
  e.name = t["name"].value_or(std::string{});
  if (e.name.empty() || e.name.size() > 128) {
    return bad_entry(path, index, "",
                     "name: expected a string of 1..128 "
                     "bytes");
  }
  auto key_text = t["public_key"].value<std::string>();
  if (!key_text) {
    return bad_entry(path, index, e.name, "public_key: missing");
  }
  auto key = key_from_z85(*key_text);
  if (!key) {
    return bad_entry(path, index, e.name,
                     "public_key: " + reason_of(key.error()));
  }
  e.public_key = *key;
  e.tenant = t["tenant"].value_or(std::string{"default"});
  if (e.tenant.empty() || e.tenant.size() > 128) {
    return bad_entry(path, index, e.name, "tenant: expected 1..128 bytes");
  }
  auto role = t["role"].value_or(std::string{"client"});
  if (role == "admin") {
    e.role = client_role::admin;
  } else if (role != "client") {
    return bad_entry(path, index, e.name,
                     "role: expected \"client\" or \"admin\", got \"" + role +
                         "\"");
  }
  return e;
}

caf::expected<std::vector<client_entry>>
parse_clients(const std::string& path, const toml::table& root) {
  std::vector<client_entry> out;
  for (auto& [k, v] : root) {
    if (k.str() != "client") {
      return make_error(errc::config_invalid, "security.clients_file: " + path +
                                                  ": unknown key '" +
                                                  std::string{k.str()} + "'");
    }
  }
  auto* list = root["client"].as_array();
  if (list == nullptr) {
    return out; // no clients: every key is refused
  }
  for (size_t i = 0; i < list->size(); ++i) {
    auto* t = (*list)[i].as_table();
    if (t == nullptr) {
      return bad_entry(path, i, "", "expected a [[client]] table");
    }
    auto e = parse_entry(path, i, *t);
    if (!e) {
      return e.error();
    }
    for (auto& prev : out) {
      if (prev.name == e->name) {
        return bad_entry(path, i, e->name, "name given twice");
      }
      if (prev.public_key == e->public_key) {
        return bad_entry(path, i, e->name,
                         "public_key is also " + prev.name + "'s");
      }
    }
    out.push_back(std::move(*e));
  }
  return out;
}

} // namespace

caf::expected<std::vector<client_entry>>
load_clients_file(const std::string& path) {
  if (auto err = check_private_file(path, "security.clients_file")) {
    return err;
  }
  try {
    auto root = toml::parse_file(path);
    return parse_clients(path, root);
  } catch (const toml::parse_error& e) {
    auto& where = e.source().begin;
    return make_error(errc::config_invalid,
                      "security.clients_file: " + path + ":" +
                          std::to_string(where.line) + ":" +
                          std::to_string(where.column) + ": " +
                          std::string{e.description()});
  }
}

client_registry::file_stamp client_registry::stamp_of(const std::string& path) {
  struct stat st {};
  file_stamp s;
  if (::stat(path.c_str(), &st) != 0) {
    return s;
  }
  s.ino = st.st_ino;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  s.ctime_ns = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec;
  return s;
}

caf::expected<std::shared_ptr<client_registry>>
client_registry::open(std::string path) {
  std::shared_ptr<client_registry> reg{new client_registry{std::move(path)}};
  auto stamp = stamp_of(reg->path_);
  auto entries = load_clients_file(reg->path_);
  if (!entries) {
    return entries.error();
  }
  reg->entries_ = std::move(*entries);
  for (auto& e : reg->entries_) {
    reg->names_.insert(e.name);
  }
  reg->stamp_ = stamp;
  return reg;
}

std::optional<client_entry> client_registry::find(const curve_key& key) const {
  std::lock_guard<std::mutex> guard{mtx_};
  for (auto& e : entries_) {
    if (e.public_key == key) {
      return e;
    }
  }
  return std::nullopt;
}

bool client_registry::has_name(const std::string& name) const {
  std::lock_guard<std::mutex> guard{mtx_};
  return names_.count(name) > 0;
}

uint64_t client_registry::generation() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return generation_;
}

size_t client_registry::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return entries_.size();
}

void client_registry::reload_if_changed() {
  auto stamp = stamp_of(path_);
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (stamp == stamp_) {
      return;
    }
    // Tried once per change: a bad file is not re-parsed (and re-logged)
    // every tick, only when it changes again.
    stamp_ = stamp;
  }
  reload();
}

bool client_registry::reload() {
  auto stamp = stamp_of(path_);
  auto entries = load_clients_file(path_);
  if (!entries) {
    spdlog::error("security: keeping the previous {} client(s): {}", size(),
                  reason_of(entries.error()));
    return false;
  }
  std::unordered_set<std::string> names;
  for (auto& e : *entries) {
    names.insert(e.name);
  }
  auto n = entries->size();
  {
    std::lock_guard<std::mutex> guard{mtx_};
    entries_ = std::move(*entries);
    names_ = std::move(names);
    stamp_ = stamp;
    ++generation_;
  }
  spdlog::info("security: clients file {} read: {} client(s)", path_, n);
  return true;
}

} // namespace shoal
