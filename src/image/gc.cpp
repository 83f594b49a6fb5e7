#include "image/gc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>

#include "base/error.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "image/content_store.hpp"
#include "image/image_store.hpp"

namespace racker::image {

Lease::Lease(const std::string& store_root) : root_(store_root) {
  mkdir_p(root_ + "/leases", 0700);
  path_ = root_ + "/leases/" + random_hex(16) + ".lease";
  FileLock gc(root_ + "/leases/lock");  // a collection never sees the file before our flock
  fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600));
  if (!fd_) throw_errno("create lease " + path_);
  // held until we end: a collector that can take it knows the holder is gone
  if (::flock(fd_.get(), LOCK_EX) != 0) throw_errno("lock lease " + path_);
}

Lease::~Lease() {
  if (fd_) ::unlink(path_.c_str());
}

void Lease::add(const std::vector<std::string>& refs) {
  std::string text;
  for (auto& r : refs) text += r + "\n";
  FileLock gc(root_ + "/leases/lock");  // not while a collection runs
  if (!write_all(fd_.get(), text.data(), text.size())) throw_errno("write lease " + path_);
}

namespace {

// The entries of the live leases; removes those whose holders are gone.
std::set<std::string> leased(const std::string& root) {
  std::set<std::string> out;
  std::string dir = root + "/leases";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.ends_with(".lease")) names.push_back(n);
  }
  ::closedir(d);
  for (auto& n : names) {
    std::string path = dir + "/" + n;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;  // ended meanwhile
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      ::unlink(path.c_str());  // nobody holds it: its holder died
      continue;
    }
    auto text = read_file_if_exists(path);
    if (!text) continue;
    for (auto& line : split(*text, '\n'))
      if (!line.empty()) out.insert(line);
  }
  return out;
}

}  // namespace

void collect_garbage(ContentStore& content, ImageStore& images, const std::set<std::string>* only) {
  mkdir_p(images.root() + "/leases", 0700);
  FileLock gc(images.root() + "/leases/lock");
  std::set<std::string> live = leased(images.root());
  for (auto& r : images.list()) {
    live.insert(r.manifest_digest);
    live.insert(r.config_digest);
    for (auto& l : r.layers) {
      live.insert(l.chain_id);
      live.insert(l.digest);
    }
  }
  auto doomed = [&](const std::string& x) { return !live.count(x) && (!only || only->count(x)); };
  for (auto& c : images.layers_on_disk())
    if (doomed(c)) images.remove_layer(c);
  for (auto& b : content.list_blobs())
    if (doomed(b)) content.remove_blob(b);
}

}  // namespace racker::image
