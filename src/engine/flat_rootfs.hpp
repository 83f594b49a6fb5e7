// A container root filesystem without overlayfs: the image's layers copied, bottom to top,
// into one directory, with overlayfs' semantics (0:0 character devices are whiteouts,
// trusted.overlay.opaque hides a lower directory's content). For hosts or store locations where
// an overlay mount is refused (e.g. a store on overlayfs itself); it costs a full copy per
// container.
#pragma once

#include <string>
#include <vector>

namespace racker::engine {

// layers: the layers' fs directories, lowest first. Never follows a symlink in either tree.
// Throws racker::Error naming the path that failed.
void flatten_layers(const std::vector<std::string>& layers, const std::string& dst);

}  // namespace racker::engine
