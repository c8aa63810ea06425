#!/usr/bin/env python3
"""Makes testdata/text/austen-calib.txt and austen-eval.txt, the English text `make demo` and the real-model
test calibrate and evaluate on, from Debian's r-cran-janeaustenr (Jane Austen's six novels as R data).

Why this text: real English prose (not the synthetic-story text of TinyStories), public domain (Austen
died in 1817; the novels are Project Gutenberg's e-texts), packaged by Debian under MIT (the R package's
licence, which covers the packaging), and reachable here with `apt-get download` alone (nothing installed,
no R needed: this script reads R's lazy-load database itself).

    python3 scripts/text/austen_from_debian.py [DEB]     (default: apt-get download r-cran-janeaustenr)

Output: paragraphs (the package's lines rejoined, blank lines between paragraphs), chapter headings
dropped. Calibration: Pride and Prejudice, chapters 1-10; evaluation: Persuasion, chapters 1-8. Stdlib only.
"""
import bz2
import glob
import gzip
import lzma
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "testdata", "text")


class RReader:
    """R's XDR serialization (format 2 or 3), enough of it for a lazy-load database's character vectors,
    lists and pairlists."""

    def __init__(self, data):
        self.d, self.p, self.refs = data, 0, []
        assert self.d[:2] == b"X\n", "not XDR serialization"
        self.p = 2
        version = self.int()
        self.int()
        self.int()
        if version == 3:
            n = self.int()  # the native encoding's name
            self.p += n

    def int(self):
        v = struct.unpack(">i", self.d[self.p:self.p + 4])[0]
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in (254, 242):  # NILVALUE_SXP, EMPTYENV
            return None
        if t == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1]
        if t in (251, 253, 252):  # MISSINGARG, GLOBALENV, BASEENV
            return None
        if t == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p:self.p + n].decode("utf-8", "replace")
            self.p += n
            return s
        if t in (2, 6):  # LISTSXP, LANGSXP: attributes, tag, car, cdr
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return {"tag": tag, "car": car, "cdr": cdr, "attr": attr}
        if t == 16 or t == 19 or t == 20:  # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            v = [self.item() for _ in range(n)]
            attr = self.item() if has_attr else None
            return {"values": v, "attr": attr} if attr is not None else v
        if t in (13, 10):  # INTSXP, LGLSXP
            n = self.int()
            v = list(struct.unpack(f">{n}i", self.d[self.p:self.p + 4 * n]))
            self.p += 4 * n
            if has_attr:
                self.item()
            return v
        if t == 14:  # REALSXP
            n = self.int()
            v = list(struct.unpack(f">{n}d", self.d[self.p:self.p + 8 * n]))
            self.p += 8 * n
            if has_attr:
                self.item()
            return v
        raise ValueError(f"R type {t} at byte {self.p - 4} not read")


def pairlist(x):
    out = {}
    while isinstance(x, dict) and "car" in x:
        out[x["tag"]] = x["car"]
        x = x["cdr"]
    return out


def named(x):
    """A named list (VECSXP with a names attribute) as a dict."""
    return dict(zip(pairlist(x["attr"])["names"], x["values"]))


def lazyload(rdx, rdb):
    def unpack(blob):
        # 4 bytes of length, then zlib, or a type byte: Z (xz), 2 (bzip2), 0 (stored).
        n = struct.unpack(">I", blob[:4])[0]
        kind = blob[4:5]
        if kind == b"Z":
            data = lzma.decompress(blob[5:])
        elif kind == b"2":
            data = bz2.decompress(blob[5:])
        elif kind == b"0":
            data = blob[5:]
        else:
            data = zlib.decompress(blob[4:])
        assert len(data) == n
        return RReader(data).item()

    with open(rdx, "rb") as f:  # saveRDS: gzip
        index = named(RReader(gzip.decompress(f.read())).item())
    with open(rdb, "rb") as f:
        db = f.read()
    out = {}
    for name, (offset, length) in named(index["variables"]).items():
        out[name] = unpack(db[offset:offset + length])
    return out


def paragraphs(lines, first_chapter, last_chapter):
    chapter, paras, cur = 0, [], []
    for line in lines:
        line = (line or "").strip()
        if re.match(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?$", line):
            chapter += 1
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if not (first_chapter <= chapter <= last_chapter):
            continue
        if line:
            cur.append(line)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return [p for p in paras if len(p) > 0]


def main(argv):
    with tempfile.TemporaryDirectory() as tmp:
        deb = argv[0] if argv else None
        if deb is None:
            subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True)
            deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")], check=True)
        data = glob.glob(os.path.join(tmp, "x", "usr/lib/R/site-library/janeaustenr/data"))[0]
        novels = lazyload(os.path.join(data, "Rdata.rdx"), os.path.join(data, "Rdata.rdb"))
    os.makedirs(OUT, exist_ok=True)
    for name, novel, first, last in [("austen-calib.txt", "prideprejudice", 1, 10),
                                     ("austen-eval.txt", "persuasion", 1, 8)]:
        paras = paragraphs(novels[novel], first, last)
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            f.write("\n\n".join(paras) + "\n")
        print(f"{name}: {novel} chapters {first}-{last}, {len(paras)} paragraphs, "
              f"{sum(len(p) for p in paras)} characters")


if __name__ == "__main__":
    main(sys.argv[1:])
