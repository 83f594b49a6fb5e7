#include "cli/racker-oci/reexec.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"

extern char** environ;

namespace racker::cli {

namespace {
constexpr int kSeals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
}

void reexec_from_sealed_copy(char** argv) {
  UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!self) throw_errno("open /proc/self/exe");
  int seals = ::fcntl(self.get(), F_GET_SEALS);
  if (seals >= 0 && (seals & kSeals) == kSeals) return;  // we are the sealed copy
  UniqueFd copy(::memfd_create("racker-oci", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!copy) throw_errno("memfd_create");
  // read and write, not sendfile: sendfile splices page references into the memfd's pages,
  // and a page still referenced makes F_SEAL_WRITE fail with EBUSY (seen under load in CI)
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(self.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("copy /proc/self/exe");
    if (n == 0) break;
    if (!write_all(copy.get(), buf.data(), static_cast<size_t>(n)))
      throw_errno("copy /proc/self/exe");
  }
  for (int tries = 0;; ++tries) {
    if (::fcntl(copy.get(), F_ADD_SEALS, kSeals) == 0) break;
    if (errno != EBUSY || tries == 20) throw_errno("seal memfd copy");
    ::usleep(5000);  // a page still referenced for a moment (EBUSY): once more
  }
  ::fexecve(copy.get(), argv, environ);
  throw_errno("re-execute from sealed copy");
}

}  // namespace racker::cli
