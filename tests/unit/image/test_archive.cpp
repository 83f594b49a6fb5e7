// Reading image archives: docker-archive (both layouts docker writes), OCI layout directories
// and OCI archives, and the exact messages for malformed ones. The archives are written by the
// TarWriter that `save` uses (image/tar.hpp), so these tests cover it too. No root needed: nothing
// is unpacked.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <isa-l/igzip_lib.h>
#include <stdlib.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/archive.hpp"
#include "image/digest.hpp"
#include "image/tar.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;
using nlohmann::json;

namespace {

// A tar made of (path, data) members; a data of "->target" makes a symlink.
using Members = std::vector<std::pair<std::string, std::string>>;

std::string gzip(const std::string& in) {
  isal_zstream st;
  isal_deflate_stateless_init(&st);
  std::string out(in.size() + 1024, '\0');
  st.next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data()));
  st.avail_in = static_cast<uint32_t>(in.size());
  st.next_out = reinterpret_cast<uint8_t*>(out.data());
  st.avail_out = static_cast<uint32_t>(out.size());
  st.end_of_stream = 1;
  st.gzip_flag = IGZIP_GZIP;
  EXPECT_EQ(isal_deflate_stateless(&st), COMP_OK);
  out.resize(st.total_out);
  return out;
}

// A small, valid layer tar (one file).
std::string layer_tar(const std::string& name, const std::string& content) {
  char tmpl[] = "/tmp/racker-layer-XXXXXX";
  int fd = mkstemp(tmpl);
  EXPECT_GE(fd, 0);
  {
    TarWriter w(fd);
    w.add_file(name, content);
    w.finish();
  }
  std::string data = read_file(tmpl);
  ::close(fd);
  ::unlink(tmpl);
  return data;
}

std::string config_for(const std::vector<std::string>& layers_uncompressed) {
  json diff = json::array();
  for (auto& l : layers_uncompressed) diff.push_back(sha256_digest(l));
  return json{{"architecture", "amd64"},
              {"os", "linux"},
              {"rootfs", {{"type", "layers"}, {"diff_ids", diff}}}}
      .dump();
}

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.platform = "linux/amd64";
    opts_.spool_dir = dir_ + "/spool";
  }

  std::string write_tar(const Members& members, const std::string& name = "a.tar") {
    std::string path = dir_ + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    EXPECT_TRUE(fd.valid());
    TarWriter w(fd.get());
    for (auto& [p, data] : members) {
      if (data.starts_with("->"))
        w.add_symlink(p, data.substr(2));
      else
        w.add_file(p, data);
    }
    w.finish();
    return path;
  }

  std::string write_dir(const Members& members, const std::string& name = "layout") {
    std::string root = dir_ + "/" + name;
    for (auto& [p, data] : members) {
      std::string full = root + "/" + p;
      mkdir_p(full.substr(0, full.rfind('/')));
      write_file_atomic(full, data);
    }
    mkdir_p(root);
    return root;
  }

  std::unique_ptr<ImageArchive> open(const std::string& path) {
    return ImageArchive::open(path, opts_);
  }

  // The message open() fails with.
  std::string error_of(const std::string& path) {
    return test::error_of([&] { open(path); });
  }

  // A docker-archive (legacy layout) of one image with the given layer blobs.
  Members docker_members(const std::vector<std::string>& blobs,
                         const std::vector<std::string>& uncompressed,
                         const std::string& tags = R"(["busybox:1"])") {
    Members m;
    json layers = json::array();
    for (size_t i = 0; i < blobs.size(); ++i) {
      std::string p = "l";
      p += std::to_string(i);
      p += "/layer.tar";
      m.push_back({p, blobs[i]});
      layers.push_back(p);
    }
    std::string cfg = config_for(uncompressed);
    m.push_back({sha256_digest(cfg).substr(7) + ".json", cfg});
    json manifest = json::array({{{"Config", sha256_digest(cfg).substr(7) + ".json"},
                                  {"RepoTags", json::parse(tags)},
                                  {"Layers", layers}}});
    m.push_back({"manifest.json", manifest.dump()});
    return m;
  }

  // An OCI layout with one image (OCI manifest, gzip layers) under the given index entries.
  struct Oci {
    Members members;
    std::string manifest_digest, config_digest;
    std::vector<std::string> layer_digests;
  };
  Oci oci(const std::vector<std::string>& uncompressed, const std::vector<json>& annotations) {
    Oci o;
    json layers = json::array();
    for (auto& u : uncompressed) {
      std::string gz = gzip(u);
      o.layer_digests.push_back(sha256_digest(gz));
      o.members.push_back({"blobs/sha256/" + sha256_digest(gz).substr(7), gz});
      layers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                        {"digest", sha256_digest(gz)},
                        {"size", gz.size()}});
    }
    std::string cfg = config_for(uncompressed);
    o.config_digest = sha256_digest(cfg);
    o.members.push_back({"blobs/sha256/" + o.config_digest.substr(7), cfg});
    std::string manifest = json{
        {"schemaVersion", 2},
        {"mediaType", media::oci_manifest},
        {"config",
         {{"mediaType", media::oci_config}, {"digest", o.config_digest}, {"size", cfg.size()}}},
        {"layers", layers}}.dump();
    o.manifest_digest = sha256_digest(manifest);
    o.members.push_back({"blobs/sha256/" + o.manifest_digest.substr(7), manifest});
    json entries = json::array();
    for (auto& a : annotations) {
      json e = {{"mediaType", media::oci_manifest},
                {"digest", o.manifest_digest},
                {"size", manifest.size()}};
      if (!a.is_null()) e["annotations"] = a;
      entries.push_back(e);
    }
    o.members.push_back({"oci-layout", R"({"imageLayoutVersion":"1.0.0"})"});
    o.members.push_back(
        {"index.json",
         json{{"schemaVersion", 2}, {"mediaType", media::oci_index}, {"manifests", entries}}
             .dump()});
    return o;
  }

  static std::string read_blob(const ImageArchive& a, const std::string& digest) {
    std::string out;
    Descriptor d;
    d.digest = digest;
    a.read(d, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
    return out;
  }

  test::TempDir tmp_{"racker-archive"};
  const std::string dir_ = tmp_.path();
  ImageArchive::Options opts_;
};

json ref_name(const std::string& n) {
  return {{kRefNameAnnotation, n}};
}

}  // namespace

// --- docker-archive ---

TEST_F(ArchiveTest, DockerArchiveLegacyLayout) {
  std::string l1 = layer_tar("a", "first"), l2 = layer_tar("b", "second");
  auto path = write_tar(docker_members({l1, l2}, {l1, l2}, R"(["busybox:1", "quay.io/x/y:2"])"));
  auto a = open(path);
  EXPECT_EQ(a->format(), ArchiveFormat::docker_archive);
  ASSERT_EQ(a->images().size(), 1u);
  const ArchivedImage& img = a->images()[0];
  EXPECT_EQ(img.names, (std::vector<std::string>{"docker.io/library/busybox:1", "quay.io/x/y:2"}));
  EXPECT_EQ(img.manifest_digest, sha256_digest(img.manifest));
  Manifest m = parse_manifest(img.manifest, "test");
  EXPECT_EQ(m.media_type, media::docker_manifest);
  EXPECT_EQ(m.config.media_type, media::docker_config);
  ASSERT_EQ(m.layers.size(), 2u);
  // uncompressed layers are their own diff: digest = diff_id, stored as they are
  EXPECT_EQ(m.layers[0].digest, sha256_digest(l1));
  EXPECT_EQ(m.layers[1].digest, sha256_digest(l2));
  EXPECT_EQ(m.layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar");
  EXPECT_EQ(m.layers[1].size, static_cast<int64_t>(l2.size()));
  EXPECT_EQ(img.blob_paths.at(sha256_digest(l2)), "l1/layer.tar");
  EXPECT_EQ(read_blob(*a, sha256_digest(l2)), l2);
  EXPECT_EQ(read_blob(*a, m.config.digest), config_for({l1, l2}));
  EXPECT_EQ(a->where(m.layers[0]), "l0/layer.tar");
}

TEST_F(ArchiveTest, DockerArchiveCompressedLayersAndBlobsLayout) {
  std::string l1 = layer_tar("a", "first");
  std::string gz = gzip(l1);
  // legacy path: the digest is computed from the member
  auto a = open(write_tar(docker_members({gz}, {l1})));
  Manifest m = parse_manifest(a->images()[0].manifest, "test");
  EXPECT_EQ(m.layers[0].digest, sha256_digest(gz));
  EXPECT_EQ(m.layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");

  // docker >= 25: blobs/sha256/<hex>, config too; RepoTags null
  std::string cfg = config_for({l1});
  std::string lp = "blobs/sha256/" + sha256_digest(gz).substr(7);
  std::string cp = "blobs/sha256/" + sha256_digest(cfg).substr(7);
  json manifest = json::array({{{"Config", cp}, {"RepoTags", nullptr}, {"Layers", {lp}}}});
  auto b = open(write_tar({{lp, gz}, {cp, cfg}, {"manifest.json", manifest.dump()}}, "b.tar"));
  ASSERT_EQ(b->images().size(), 1u);
  EXPECT_TRUE(b->images()[0].names.empty());
  Manifest mb = parse_manifest(b->images()[0].manifest, "test");
  EXPECT_EQ(mb.layers[0].digest, sha256_digest(gz));
  EXPECT_EQ(mb.config.digest, sha256_digest(cfg));
}

TEST_F(ArchiveTest, DockerArchiveSymlinkedLayerAndLongNames) {
  // docker writes a repeated layer as a symlink to the first copy; names past 100 bytes need
  // PAX headers (or the ustar prefix) when written and reading them back
  std::string l1 = layer_tar("a", "same");
  std::string longdir(140, 'd');
  std::string cfg = config_for({l1, l1});
  std::string cname = std::string(120, 'c') + ".json";
  json manifest = json::array({{{"Config", cname},
                                {"RepoTags", {"x:1"}},
                                {"Layers", {longdir + "/layer.tar", "two/layer.tar"}}}});
  auto a = open(write_tar({{longdir + "/layer.tar", l1},
                           {"two/layer.tar", "->../" + longdir + "/layer.tar"},
                           {cname, cfg},
                           {"manifest.json", manifest.dump()}}));
  Manifest m = parse_manifest(a->images()[0].manifest, "test");
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[1].digest, sha256_digest(l1));
  EXPECT_EQ(read_blob(*a, sha256_digest(l1)), l1);
}

TEST_F(ArchiveTest, DockerArchiveSeveralImagesAndGzipArchive) {
  std::string l1 = layer_tar("a", "1"), l2 = layer_tar("b", "2");
  Members m = docker_members({l1}, {l1}, R"(["one:1"])");
  Members m2 = docker_members({l2}, {l2}, R"(["two:2"])");
  json list = json::parse(m.back().second);
  list.push_back(json::parse(m2.back().second)[0]);
  m.pop_back();
  m2.pop_back();
  m2[0].first = "other/layer.tar";
  list[1]["Layers"] = {"other/layer.tar"};
  m.insert(m.end(), m2.begin(), m2.end());
  m.push_back({"manifest.json", list.dump()});
  std::string plain = read_file(write_tar(m));
  write_file_atomic(dir_ + "/a.tar.gz", gzip(plain));
  auto a = open(dir_ + "/a.tar.gz");  // decompressed into the spool directory
  ASSERT_EQ(a->images().size(), 2u);
  EXPECT_EQ(a->images()[0].names, std::vector<std::string>{"docker.io/library/one:1"});
  EXPECT_EQ(a->images()[1].names, std::vector<std::string>{"docker.io/library/two:2"});
  EXPECT_EQ(read_blob(*a, sha256_digest(l2)), l2);
}

TEST_F(ArchiveTest, OpenStreamSpoolsAPipe) {
  std::string l1 = layer_tar("a", "first");
  std::string data = read_file(write_tar(docker_members({l1}, {l1})));
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    rd.reset();
    write_all(wr.get(), data.data(), data.size());
    _exit(0);
  }
  wr.reset();
  auto a = ImageArchive::open_stream(rd.get(), opts_);
  ::waitpid(pid, nullptr, 0);
  ASSERT_EQ(a->images().size(), 1u);
  EXPECT_EQ(read_blob(*a, sha256_digest(l1)), l1);
}

// --- OCI ---

TEST_F(ArchiveTest, OciLayoutDirectoryAndArchive) {
  std::string l1 = layer_tar("a", "1"), l2 = layer_tar("b", "2");
  Oci o = oci({l1, l2}, {ref_name("registry.example.com/app:1.0"), ref_name("app:2"),
                         ref_name("v1.0"),  // a bare tag names nothing
                         json{{kContainerdNameAnnotation, "docker.io/library/ctr:3"},
                              {kRefNameAnnotation, "3"}}});
  auto d = open(write_dir(o.members));
  EXPECT_EQ(d->format(), ArchiveFormat::oci_dir);
  ASSERT_EQ(d->images().size(), 1u);  // one manifest under four entries
  const ArchivedImage& img = d->images()[0];
  EXPECT_EQ(img.names,
            (std::vector<std::string>{"registry.example.com/app:1.0", "docker.io/library/app:2",
                                      "docker.io/library/ctr:3"}));
  EXPECT_EQ(img.manifest_digest, o.manifest_digest);
  EXPECT_EQ(sha256_digest(img.manifest), o.manifest_digest);
  EXPECT_EQ(img.blob_paths.size(), 3u);
  EXPECT_EQ(img.blob_paths.at(o.layer_digests[1]), "blobs/sha256/" + o.layer_digests[1].substr(7));
  EXPECT_EQ(read_blob(*d, o.layer_digests[0]), gzip(l1));

  auto t = open(write_tar(o.members));
  EXPECT_EQ(t->format(), ArchiveFormat::oci_archive);
  EXPECT_EQ(t->images()[0].names, img.names);
  EXPECT_EQ(read_blob(*t, o.config_digest), config_for({l1, l2}));
}

TEST_F(ArchiveTest, OciIndexPicksThePlatform) {
  std::string l1 = layer_tar("a", "1");
  Oci o = oci({l1}, {json(nullptr)});
  // wrap the manifest into a nested index with an arm64 sibling that is not in the layout
  Members m = o.members;
  m.pop_back();  // index.json
  std::string manifest;
  for (auto& [p, data] : m)
    if (p == "blobs/sha256/" + o.manifest_digest.substr(7)) manifest = data;
  json nested = {{"schemaVersion", 2},
                 {"mediaType", media::oci_index},
                 {"manifests",
                  {{{"mediaType", media::oci_manifest},
                    {"digest", "sha256:" + std::string(64, 'a')},
                    {"size", 10},
                    {"platform", {{"os", "linux"}, {"architecture", "arm64"}}}},
                   {{"mediaType", media::oci_manifest},
                    {"digest", o.manifest_digest},
                    {"size", manifest.size()},
                    {"platform", {{"os", "linux"}, {"architecture", "amd64"}}}}}}};
  std::string nb = nested.dump();
  m.push_back({"blobs/sha256/" + sha256_digest(nb).substr(7), nb});
  json index = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", media::oci_index},
                   {"digest", sha256_digest(nb)},
                   {"size", nb.size()},
                   {"annotations", ref_name("docker.io/x/multi:1")}}}}};
  m.push_back({"index.json", index.dump()});
  auto a = open(write_dir(m));
  ASSERT_EQ(a->images().size(), 1u);
  EXPECT_EQ(a->images()[0].manifest_digest, o.manifest_digest);
  EXPECT_EQ(a->images()[0].names, std::vector<std::string>{"docker.io/x/multi:1"});

  opts_.platform = "linux/s390x";
  EXPECT_EQ(error_of(dir_ + "/layout"),
            "no image for platform linux/s390x in index.json: manifests[0] (available: "
            "linux/arm64, linux/amd64)");
}

// --- malformed archives: the exact messages ---

TEST_F(ArchiveTest, NotAnArchive) {
  write_file_atomic(dir_ + "/empty.tar", "");
  EXPECT_EQ(error_of(dir_ + "/empty.tar"), "not a tar archive (empty file)");
  write_file_atomic(dir_ + "/short.tar", "hello");
  EXPECT_EQ(error_of(dir_ + "/short.tar"), "not a tar archive (too short)");
  write_file_atomic(dir_ + "/junk.tar", std::string(2048, 'j'));
  EXPECT_EQ(error_of(dir_ + "/junk.tar"), "not a tar archive");
  EXPECT_EQ(error_of(dir_ + "/absent.tar"),
            "open " + dir_ + "/absent.tar: No such file or directory");
  EXPECT_EQ(error_of(write_tar({{"hello.txt", "hi"}})),
            "no manifest.json or index.json: not a docker-archive or OCI archive");
  mkdir_p(dir_ + "/emptydir");
  EXPECT_EQ(error_of(dir_ + "/emptydir"),
            "no manifest.json or index.json: not a docker-archive or OCI image layout");
}

TEST_F(ArchiveTest, TruncatedAndCorruptTar) {
  std::string l1 = layer_tar("a", std::string(5000, 'x'));
  std::string data = read_file(write_tar(docker_members({l1}, {l1})));
  write_file_atomic(dir_ + "/trunc.tar", data.substr(0, 1536));
  EXPECT_EQ(error_of(dir_ + "/trunc.tar"),
            "truncated tar archive (l0/layer.tar needs " + std::to_string(l1.size()) + " bytes)");
  std::string corrupt = data;
  size_t second = 512 + (l1.size() + 511) / 512 * 512;  // the header after l0/layer.tar
  corrupt[second + 10] ^= 0x55;
  write_file_atomic(dir_ + "/corrupt.tar", corrupt);
  EXPECT_EQ(error_of(dir_ + "/corrupt.tar"),
            "corrupt tar header at offset " + std::to_string(second));
}

TEST_F(ArchiveTest, MalformedManifestJson) {
  std::string l1 = layer_tar("a", "1"), l2 = layer_tar("b", "2");
  auto with_manifest = [&](const std::string& body) {
    Members m = docker_members({l1}, {l1});
    m.back().second = body;
    return error_of(write_tar(m));
  };
  EXPECT_EQ(with_manifest("[{oops"), "manifest.json: not valid JSON");
  EXPECT_EQ(with_manifest("{}"), "manifest.json: not a list of images");
  EXPECT_EQ(with_manifest("[]"), "manifest.json: lists no images");
  EXPECT_EQ(with_manifest(R"([{"Layers": []}])"), "manifest.json: image 1: no Config");
  EXPECT_EQ(with_manifest(R"([{"Config": "c.json"}])"), "manifest.json: image 1: no Layers");
  EXPECT_EQ(with_manifest(R"([{"Config": "nope.json", "Layers": []}])"),
            "manifest.json: image 1: config nope.json is missing from the archive");
  std::string cfg_name = sha256_digest(config_for({l1})).substr(7) + ".json";
  EXPECT_EQ(with_manifest(R"([{"Config": ")" + cfg_name + R"(", "Layers": []}])"),
            "manifest.json: image 1: 0 layers but config " + cfg_name + " lists 1 diff_ids");
  EXPECT_EQ(with_manifest(R"([{"Config": ")" + cfg_name + R"(", "Layers": ["x/layer.tar"]}])"),
            "manifest.json: image 1: layer x/layer.tar is missing from the archive");
  EXPECT_EQ(
      with_manifest(R"([{"Config": ")" + cfg_name +
                    R"(", "Layers": ["l0/layer.tar"], "RepoTags": ["Bad:Tag"]}])"),
      "manifest.json: image 1: RepoTags: invalid reference \"Bad:Tag\": repository name must be "
      "lowercase");

  Members m = docker_members({l1}, {l1});
  m[1].second = "not json";  // the config
  EXPECT_EQ(error_of(write_tar(m)),
            "manifest.json: image 1: config " + m[1].first + ": image config: not valid JSON");
  (void)l2;
}

TEST_F(ArchiveTest, MalformedOciLayout) {
  std::string l1 = layer_tar("a", "1");
  auto variant = [&](const std::function<void(Oci&)>& edit) {
    Oci o = oci({l1}, {ref_name("x/y:1")});
    edit(o);
    remove_tree(dir_ + "/layout");
    return error_of(write_dir(o.members));
  };
  auto member = [](Oci& o, const std::string& path) -> std::string& {
    for (auto& [p, d] : o.members)
      if (p == path) return d;
    throw Error("no member " + path);
  };
  EXPECT_EQ(variant([&](Oci& o) { member(o, "oci-layout") = R"({"imageLayoutVersion":"2.0.0"})"; }),
            "oci-layout: unsupported imageLayoutVersion \"2.0.0\"");
  EXPECT_EQ(variant([&](Oci& o) { member(o, "index.json") = R"({"manifests": []})"; }),
            "index.json: lists no images");
  EXPECT_EQ(variant([&](Oci& o) { member(o, "index.json") = "[]"; }),
            "index.json: not an image index (no manifests)");
  EXPECT_EQ(variant([&](Oci& o) {
              std::erase_if(o.members, [&](auto& m) {
                return m.first == "blobs/sha256/" + o.layer_digests[0].substr(7);
              });
            }),
            "index.json: manifests[0]: blob " + oci({l1}, {}).layer_digests[0] +
                " is missing from the archive");
  Oci ref = oci({l1}, {});
  std::string mpath = "blobs/sha256/" + ref.manifest_digest.substr(7);
  EXPECT_EQ(variant([&](Oci& o) { member(o, mpath).back() = ' '; }),
            "index.json: manifests[0]: blob " + mpath + " has digest " +
                sha256_digest(member(ref, mpath).substr(0, member(ref, mpath).size() - 1) + " "));
  EXPECT_EQ(variant([&](Oci& o) { member(o, mpath) += " "; }),
            "index.json: manifests[0]: blob " + ref.manifest_digest + " has " +
                std::to_string(member(ref, mpath).size() + 1) + " bytes, " +
                std::to_string(member(ref, mpath).size()) + " expected");
  EXPECT_EQ(variant([&](Oci& o) {
              json idx = json::parse(member(o, "index.json"));
              idx["manifests"][0]["annotations"][kRefNameAnnotation] = "UP/per:1";
              member(o, "index.json") = idx.dump();
            }),
            "index.json: manifests[0]: annotation org.opencontainers.image.ref.name: invalid "
            "reference \"UP/per:1\": repository name must be lowercase");
  // an artifact, not an image
  std::string artifact = R"({"schemaVersion":2,"mediaType":"application/vnd.example+json"})";
  EXPECT_EQ(variant([&](Oci& o) {
              o.members.push_back({"blobs/sha256/" + sha256_digest(artifact).substr(7), artifact});
              json idx = json::parse(member(o, "index.json"));
              idx["manifests"][0]["digest"] = sha256_digest(artifact);
              idx["manifests"][0]["size"] = artifact.size();
              idx["manifests"][0]["mediaType"] = "application/vnd.example+json";
              member(o, "index.json") = idx.dump();
            }),
            "index.json: manifests[0]: unsupported media type \"application/vnd.example+json\"");
}

TEST_F(ArchiveTest, LayoutDirectoryIsContained) {
  // a symlink in a layout directory resolves inside it, never to the host's files
  std::string l1 = layer_tar("a", "1");
  Oci o = oci({l1}, {ref_name("x/y:1")});
  std::string root = write_dir(o.members);
  std::string lp = root + "/blobs/sha256/" + o.layer_digests[0].substr(7);
  ::unlink(lp.c_str());
  ASSERT_EQ(::symlink("/../../../../etc/passwd", lp.c_str()), 0);
  EXPECT_EQ(error_of(root), "index.json: manifests[0]: blob " + o.layer_digests[0] +
                                " is missing from the archive");
}

TEST(ArchiveFormat, Names) {
  EXPECT_EQ(parse_archive_format("docker-archive"), ArchiveFormat::docker_archive);
  EXPECT_EQ(parse_archive_format("oci-archive"), ArchiveFormat::oci_archive);
  EXPECT_EQ(parse_archive_format("oci-dir"), ArchiveFormat::oci_dir);
  EXPECT_EQ(archive_format_name(ArchiveFormat::oci_dir), "oci-dir");
  try {
    parse_archive_format("zip");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "unknown archive format \"zip\" (use docker-archive, oci-archive or oci-dir)");
  }
}
