#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_tar into DIR: small layers, valid and hostile (ustar, GNU and
PAX headers, every entry type, whiteouts, paths and links that try to leave the target, gzip
and zstd). Generated at test time so that the repository holds no binary blobs; deterministic.
"""
import gzip
import io
import os
import struct
import sys
import tarfile

BLOCK = 512


def header(name, typeflag=b"0", size=0, mode=0o644, uid=0, gid=0, mtime=1700000000,
           linkname="", magic=b"ustar\x0000", devmajor=0, devminor=0, prefix=""):
    """One raw 512-byte header with a correct checksum (for what tarfile will not write)."""
    h = bytearray(BLOCK)

    def put(off, length, value):
        value = value.encode() if isinstance(value, str) else value
        h[off:off + len(value[:length])] = value[:length]

    def octal(off, length, n):
        put(off, length, b"%0*o\x00" % (length - 1, n))

    put(0, 100, name)
    octal(100, 8, mode)
    octal(108, 8, uid)
    octal(116, 8, gid)
    octal(124, 12, size)
    octal(136, 12, mtime)
    put(156, 1, typeflag)
    put(157, 100, linkname)
    put(257, 8, magic)
    octal(329, 8, devmajor)
    octal(337, 8, devminor)
    put(345, 155, prefix)
    h[148:156] = b" " * 8
    put(148, 8, b"%06o\x00 " % sum(h))
    return bytes(h)


def data(payload):
    return payload + b"\x00" * (-len(payload) % BLOCK)


def pax(records, typeflag=b"x", name="PaxHeaders/x"):
    body = b""
    for key, value in records:
        rec = b" " + key.encode() + b"=" + value + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n = len(str(n)) + len(rec)
        body += str(n).encode() + rec
    return header(name, typeflag, size=len(body)) + data(body)


END = b"\x00" * (2 * BLOCK)


def with_tarfile(fmt, build, **kw):
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=fmt, **kw)
    build(tf)
    end = tf.offset
    tf.close()
    # tarfile pads to a 10 KiB record: keep the end-of-archive marker only.
    return buf.getvalue()[:end] + END


def add(tf, name, typ=tarfile.REGTYPE, content=b"", **attrs):
    ti = tarfile.TarInfo(name)
    ti.type = typ
    ti.size = len(content) if typ == tarfile.REGTYPE else 0
    ti.mtime = 1700000000
    ti.mode = attrs.pop("mode", 0o755 if typ == tarfile.DIRTYPE else 0o644)
    for k, v in attrs.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(content) if typ == tarfile.REGTYPE else None)


def basic(tf):
    add(tf, "etc", tarfile.DIRTYPE)
    add(tf, "etc/hostname", content=b"box\n")
    add(tf, "etc/link", tarfile.SYMTYPE, linkname="hostname")
    add(tf, "etc/hard", tarfile.LNKTYPE, linkname="etc/hostname")
    add(tf, "run/fifo", tarfile.FIFOTYPE, mode=0o600)
    add(tf, "bin/su", content=b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000)


def devices(tf):
    add(tf, "dev", tarfile.DIRTYPE)
    add(tf, "dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    add(tf, "dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660)


def whiteouts(tf):
    add(tf, "usr", tarfile.DIRTYPE)
    add(tf, "usr/.wh..wh..opq")
    add(tf, "usr/.wh.share")
    add(tf, ".wh.tmp")
    add(tf, "a/.wh..wh.plnk")


def pax_entries(tf):
    long_dir = "/".join(["d%02d" % i for i in range(40)])
    add(tf, long_dir + "/file", content=b"x" * 10,
        pax_headers={"SCHILY.xattr.user.comment": "hi", "mtime": "1700000000.123456789",
                     "atime": "-1.5", "LIBARCHIVE.xattr.user.b%20c": "dmFsdWU=",
                     "SCHILY.xattr.security.capability":
                         "\x01\x00\x00\x02\x00\x04\x00\x00" + "\x00" * 12})
    add(tf, "l", tarfile.SYMTYPE, linkname="../" * 40 + "target")
    add(tf, "big", content=b"", uid=2**32 - 1, pax_headers={"uid": "4294967295", "size": "0"})


def xattr_nodes(tf):
    xattrs = {"SCHILY.xattr.trusted.t": "1"}  # user.* is for files and directories only
    add(tf, "s", tarfile.SYMTYPE, linkname="target", pax_headers=xattrs)
    add(tf, "f", tarfile.FIFOTYPE, pax_headers=xattrs)
    add(tf, "c", tarfile.CHRTYPE, devmajor=1, devminor=7, pax_headers=xattrs)
    add(tf, "d", tarfile.DIRTYPE, pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y",
                                                "SCHILY.xattr.user.u": "2"})


def gnu_entries(tf):
    add(tf, "g/" + "n" * 150, content=b"long name\n")
    add(tf, "g/link", tarfile.SYMTYPE, linkname="t" * 120)
    add(tf, "g/hl", tarfile.LNKTYPE, linkname="g/" + "n" * 150)
    add(tf, "g/big-uid", uid=0o77777777 + 1)


def escapes(tf):
    add(tf, "../escape", content=b"1")
    add(tf, "/abs/file", content=b"2")
    add(tf, "up", tarfile.SYMTYPE, linkname="../../..")
    add(tf, "up/through-up", content=b"3")
    add(tf, "root", tarfile.SYMTYPE, linkname="/")
    add(tf, "root/etc/through-root", content=b"4")
    add(tf, "root/../x/y/z", tarfile.DIRTYPE)
    add(tf, "dot/./../..", tarfile.DIRTYPE)
    add(tf, "out", tarfile.LNKTYPE, linkname="../../etc/passwd")


def replace(tf):
    add(tf, "x", tarfile.DIRTYPE)
    add(tf, "x/child", content=b"a")
    add(tf, "x", content=b"now a file")
    add(tf, "x", tarfile.SYMTYPE, linkname="y")
    add(tf, "y", tarfile.DIRTYPE)
    add(tf, "x/through-link", content=b"b")
    add(tf, "y", content=b"y replaced")
    add(tf, ".", tarfile.DIRTYPE, mode=0o700)


def zstd_raw(payload):
    """A zstd frame holding payload in one raw (stored) block: no encoder needed."""
    assert len(payload) < 1 << 17
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xA0]) + struct.pack("<I", len(payload))
    frame += struct.pack("<I", (len(payload) << 3) | 1)[:3]
    return frame + payload


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = {
        "basic.tar": with_tarfile(tarfile.USTAR_FORMAT, basic),
        "devices.tar": with_tarfile(tarfile.USTAR_FORMAT, devices),
        "whiteouts.tar": with_tarfile(tarfile.PAX_FORMAT, whiteouts),
        "pax.tar": with_tarfile(tarfile.PAX_FORMAT, pax_entries,
                                pax_headers={"mtime": "1.25", "SCHILY.xattr.trusted.g": "global"}),
        "gnu.tar": with_tarfile(tarfile.GNU_FORMAT, gnu_entries),
        "xattr-nodes.tar": with_tarfile(tarfile.PAX_FORMAT, xattr_nodes),
        "escapes.tar": with_tarfile(tarfile.GNU_FORMAT, escapes),
        "replace.tar": with_tarfile(tarfile.PAX_FORMAT, replace),
        "empty": b"",
        "end-only.tar": END,
        "one-zero-block.tar": END[:BLOCK],
        "old-dir.tar": header("olddir/", b"\x00", magic=b"") + header("olddir/f", b"7") + END,
        "prefix.tar": header("name", prefix="pre/fix") + END,
        "sparse.tar": header("s", b"S") + END,
        "unknown-type.tar": header("u", b"X") + END,
        "volume.tar": header("label", b"V", size=3) + data(b"abc") + END,
        "dump-dir.tar": header("dumpdir", b"D", size=5) + data(b"Yfoo\x00") + END,
        "truncated.tar": header("t", size=4096) + data(b"short"),
        "bad-pax.tar": pax([("path", b"p"), ("size", b"-1")]) + header("f") + END,
        "global-pax.tar": pax([("path", b"everything"), ("uid", b"7")], b"g") +
                          header("a") + header("b") + END,
        "nul-path.tar": pax([("path", b"a\x00b")]) + header("f") + END,
        "trailing.tar": header("f", size=3) + data(b"abc") + END + b"trailing data",
    }
    seeds["basic.tar.gz"] = gzip.compress(seeds["basic.tar"], mtime=0)
    seeds["concat.tar.gz"] = (gzip.compress(seeds["whiteouts.tar"][:BLOCK], mtime=0) +
                              gzip.compress(seeds["whiteouts.tar"][BLOCK:], mtime=0) + b"\0" * 8)
    seeds["basic.tar.zst"] = zstd_raw(seeds["basic.tar"])
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
