#!/bin/bash
# crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"). For the
# comparison only: run it in a private mount namespace where /sys/fs/cgroup/unified is
# unmounted, so it sees a pure cgroup v1 layout. Host mounts are private, nothing leaks.
exec unshare --mount --propagation private sh -c \
  'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun "$@"' crun "$@"
