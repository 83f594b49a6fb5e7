#include "image/content_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/error.hpp"
#include "base/fs.hpp"

namespace racker::image {

namespace {

// Makes a rename or unlink in dir durable.
void fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::fsync(fd.get());
}

bool is_hex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

ContentStore::ContentStore(std::string root) : root_(std::move(root)) {}

std::string ContentStore::hex_of(const std::string& digest) const {
  validate_digest(digest);
  if (!digest.starts_with("sha256:"))
    throw Error("unsupported digest algorithm in \"" + digest + "\" (only sha256 is stored)",
                EINVAL);
  return digest.substr(7);
}

std::string ContentStore::blob_path(const std::string& digest) const {
  return root_ + "/blobs/sha256/" + hex_of(digest);
}

bool ContentStore::has(const std::string& digest) const {
  struct stat st;
  return ::stat(blob_path(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ContentStore::read_blob(const std::string& digest) const {
  std::string path = blob_path(digest);
  auto data = read_file_if_exists(path);
  if (!data) throw Error("blob " + digest + " not found in " + root_, ENOENT);
  // Cheap for the small blobs this is meant for, and catches on-disk corruption.
  std::string got = sha256_digest(*data);
  if (got != digest) throw Error("blob " + path + " is corrupt: content hashes to " + got, EIO);
  return std::move(*data);
}

std::string ContentStore::put_blob(std::string_view data, const std::string& expected_digest) {
  std::string digest = sha256_digest(data);
  if (!expected_digest.empty()) {
    hex_of(expected_digest);
    if (digest != expected_digest)
      throw Error("digest mismatch for " + expected_digest + ": got " + digest, EINVAL);
  }
  auto ingest = begin_ingest(digest, static_cast<int64_t>(data.size()));
  if (!ingest) return digest;
  ingest->reset();
  ingest->write(data.data(), data.size());
  ingest->commit();
  return digest;
}

std::optional<ContentStore::Ingest> ContentStore::begin_ingest(const std::string& digest,
                                                               int64_t expected_size) {
  std::string hex = hex_of(digest);
  if (has(digest)) return std::nullopt;
  std::string ingest_dir = root_ + "/ingest";
  mkdir_p(ingest_dir, 0700);
  mkdir_p(root_ + "/blobs/sha256");

  Ingest in;
  in.digest_ = digest;
  in.expected_size_ = expected_size < 0 ? -1 : expected_size;
  in.partial_path_ = ingest_dir + "/" + hex + ".partial";
  in.blob_path_ = root_ + "/blobs/sha256/" + hex;

  for (;;) {
    UniqueFd fd(::open(in.partial_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) throw_errno("open " + in.partial_path_);
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) throw_errno("lock " + in.partial_path_);
    }
    // While we waited, the holder may have committed (our fd then refers to the blob itself,
    // which we must never touch) or discarded the partial: check both before using the fd.
    struct stat by_fd, by_path;
    if (::fstat(fd.get(), &by_fd) != 0) throw_errno("stat " + in.partial_path_);
    bool current = ::stat(in.partial_path_.c_str(), &by_path) == 0 &&
                   by_fd.st_ino == by_path.st_ino && by_fd.st_dev == by_path.st_dev;
    if (has(digest)) {
      // Do not leave behind the empty partial our open() may have just created.
      if (current) ::unlink(in.partial_path_.c_str());
      return std::nullopt;
    }
    if (!current) continue;
    in.fd_ = std::move(fd);
    break;
  }

  // Rebuild the hash state from the bytes a previous (possibly killed) puller left behind.
  in.hash_ = std::make_unique<Sha256>();
  uint64_t have = 0;
  struct stat st;
  if (::fstat(in.fd_.get(), &st) != 0) throw_errno("stat " + in.partial_path_);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (in.expected_size_ >= 0 && size > static_cast<uint64_t>(in.expected_size_)) size = 0;
  std::string buf(1 << 20, '\0');
  while (have < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - have));
    ssize_t n = ::pread(in.fd_.get(), buf.data(), want, static_cast<off_t>(have));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read " + in.partial_path_);
    }
    if (n == 0) break;
    in.hash_->update(buf.data(), static_cast<size_t>(n));
    have += static_cast<uint64_t>(n);
  }
  if (have != static_cast<uint64_t>(st.st_size) &&
      ::ftruncate(in.fd_.get(), static_cast<off_t>(have)) != 0)
    throw_errno("truncate " + in.partial_path_);
  in.offset_ = have;
  return in;
}

std::vector<std::string> ContentStore::list_blobs() const {
  std::vector<std::string> out;
  std::string dir = root_ + "/blobs/sha256";
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;
    throw_errno("open " + dir);
  }
  while (auto* e = ::readdir(d)) {
    if (is_hex64(e->d_name)) out.push_back(std::string("sha256:") + e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void ContentStore::remove_blob(const std::string& digest) {
  std::string path = blob_path(digest);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("remove " + path);
}

// --- Ingest ---

ContentStore::Ingest::Ingest(Ingest&&) noexcept = default;
ContentStore::Ingest& ContentStore::Ingest::operator=(Ingest&&) noexcept = default;
ContentStore::Ingest::~Ingest() {
  // Nothing received (the registry answered 404, or the connection failed at once): there is
  // nothing to resume, so no empty .partial stays. Unlinked under our lock, as discard() does.
  if (fd_ && offset_ == 0) ::unlink(partial_path_.c_str());
}

void ContentStore::Ingest::check_usable() const {
  if (!fd_ || !hash_)
    throw Error("ingest of " + digest_ + " is no longer usable (committed or discarded)", EBADF);
}

void ContentStore::Ingest::discard() {
  // Unlink while still holding the lock: a waiter then sees a stale inode and starts afresh.
  ::unlink(partial_path_.c_str());
  fd_.reset();
  hash_.reset();
}

void ContentStore::Ingest::write(const void* data, size_t n) {
  check_usable();
  if (expected_size_ >= 0 && offset_ + n > static_cast<uint64_t>(expected_size_)) {
    uint64_t got = offset_ + n;
    discard();
    throw Error("size mismatch for " + digest_ + ": expected " + std::to_string(expected_size_) +
                    " bytes, got at least " + std::to_string(got),
                EINVAL);
  }
  auto* p = static_cast<const char*>(data);
  for (size_t done = 0; done < n;) {
    ssize_t w = ::pwrite(fd_.get(), p + done, n - done, static_cast<off_t>(offset_ + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw_errno("write " + partial_path_);
    done += static_cast<size_t>(w);
  }
  hash_->update(data, n);
  offset_ += n;
}

void ContentStore::Ingest::reset() {
  check_usable();
  if (::ftruncate(fd_.get(), 0) != 0) throw_errno("truncate " + partial_path_);
  hash_ = std::make_unique<Sha256>();
  offset_ = 0;
}

void ContentStore::Ingest::commit() {
  check_usable();
  if (expected_size_ >= 0 && offset_ != static_cast<uint64_t>(expected_size_)) {
    uint64_t got = offset_;
    discard();
    throw Error("size mismatch for " + digest_ + ": expected " + std::to_string(expected_size_) +
                    " bytes, got " + std::to_string(got),
                EINVAL);
  }
  std::string got = hash_->digest();
  hash_.reset();
  if (got != digest_) {
    discard();
    throw Error("digest mismatch for " + digest_ + ": got " + got, EINVAL);
  }
  if (::fsync(fd_.get()) != 0) throw_errno("fsync " + partial_path_);
  if (::fchmod(fd_.get(), 0444) != 0) throw_errno("chmod " + partial_path_);
  if (::rename(partial_path_.c_str(), blob_path_.c_str()) != 0)
    throw_errno("rename " + partial_path_ + " to " + blob_path_);
  fsync_dir(blob_path_.substr(0, blob_path_.rfind('/')));
  fsync_dir(partial_path_.substr(0, partial_path_.rfind('/')));
  fd_.reset();  // releases the lock: waiters now find the blob
}

}  // namespace racker::image
