#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/seed-*.

Most seeds are text; those of `freshness` (settings read with `arbitrary`,
little-endian), `codec` (values laid out as src/store/redis/codec.rs
describes) and `range` (a length and a kind) start with bytes, which is why
they are made here. Run it again when one of those layouts changes:

    python3 fuzz/seeds.py
"""

import os
import struct

DATE = b"Sun, 09 Sep 2001 01:46:40 GMT"
EARLIER = b"Sat, 08 Sep 2001 23:00:00 GMT"

TEXT = {
    "query": {
        "sorted": b"\na=1&b=2",
        "unsorted-ignored": b"utm_*,fbclid\nb=2&a=1&utm_source=x&a=0&fbclid=9",
        "empty-pairs": b"\na=1&&b=2&",
        "percent": b"\nq=caf%C3%A9&x=%41",
        "bad-escape": b"\na=%zz",
        "repeated-names": b"x*\nk=2&k=1&x1=0&j&=v",
    },
    "host": {
        "plain": b"acme.example",
        "upper-default-port": b"ACME.Example:80",
        "ipv6": b"[::1]:3000",
        "final-dot-tls-port": b"acme.example.:443",
        "space": b"a b",
        "other-port": b"xn--caf-dma.example:8080",
        "dot-after-port": b"acme.example:80.",
    },
    "path": {
        "root": b"/",
        "lower-escape": b"/products/caf%c3%a9",
        "dot-segment": b"/files/d1/./readme",
        "encoded-dots": b"/files/%2E%2E/etc",
        "empty-segment": b"/a//b/",
        "reserved-escape": b"/p%3Fq",
        "unreserved-escape": b"/%61pple",
    },
    "key": {
        "host-and-order": b"/products?b=2&a=1\nHost: ACME.example:80\n--\n"
        b"/products?a=1&b=2\nHost: acme.example",
        "ignored-param": b"/p?utm_source=x\n--\n/p",
        "plain-route": b"/plain?utm_a=1\n--\n/plain",
        "credentials": b"/p\nAuthorization: Bearer a\n--\n/p\nAuthorization: Bearer b",
        "absolute-form": b"http://example.com/p?a=1\n--\n/p?a=1\nHost: example.com",
        "conditional": b"/p\n--\n/p\nIf-None-Match: *",
        "encoded-slash": b"/files/a%2Fb\n--\n/files/a/b",
    },
    "vary": {
        "encoding": b"Vary: Accept-Encoding, accept\n--\nAccept-Encoding: gzip\n--\n"
        b"Accept-Encoding: br",
        "star": b"Vary: *\n--\n--\n",
        "cookie": b"Vary: cookie\n--\nCookie: a=1\n--\nCookie: a=2",
        "lines-vs-list": b"Vary: accept-language\n--\nAccept-Language: en\n"
        b"Accept-Language: fr\n--\nAccept-Language: en,fr",
        "absent-vs-empty": b"Vary: x-a\n--\n--\nX-A: ",
    },
    "cache_control": {
        "max-age": b"Cache-Control: max-age=60, public",
        "no-store": b"Cache-Control: no-store",
        "qualified-private": b'Cache-Control: private="set-cookie, x", max-age=5',
        "conflicting": b"Cache-Control: max-age=60, max-age=10",
        "quoted-and-lines": b'Cache-Control: s-maxage="30"\n'
        b"Cache-Control: stale-while-revalidate=5",
        "pragma": b"Pragma: no-cache",
        "targeted": b"CDN-Cache-Control: max-age=600\nCache-Control: no-store",
        "request": b"Cache-Control: max-stale, min-fresh=2, only-if-cached",
    },
    "conditional": {
        "strong": b'If-None-Match: "a"\nETag: "a"',
        "weak-list": b'If-None-Match: W/"a", "b"\nETag: "b"',
        "star": b'If-None-Match: *\nETag: W/"x"',
        "modified-since": b"If-Modified-Since: " + DATE + b"\nLast-Modified: " + EARLIER,
        "precedence": b'If-None-Match: "a"\nIf-Modified-Since: ' + DATE
        + b'\nETag: "b"\nLast-Modified: ' + EARLIER,
        "comma-in-tag": b'If-None-Match: "a,b"\nETag: "a,b"',
    },
    "admin": {
        "prefixes": b'\x00{"prefixes":["/products"]}',
        "tags": b'\x00{"tags":["dashboard"],"all":false}',
        "all": b'\x00{"all":true}',
        "bad-prefix": b'\x00{"prefixes":["products"]}',
        "unknown-field": b'\x00{"prefixes":[],"x":1}',
        "duplicate-field": b'\x00{"all":true,"all":false}',
        "entries": b"\x01prefix=/products&limit=2&offset=1",
        "entries-bad-limit": b"\x01limit=-1",
        "stats": b"\x02",
    },
}


def settings(mode, ttl, default=None, max_=None, heur=None, keep=600_000, swr=0, sie=0,
             targeted=0, status=200, req=1_000_000_000_000, delay=0, age=0):
    """The `Settings` of fuzz_targets/freshness.rs, as `arbitrary` reads them."""
    def opt(v):
        return b"\x00\x00\x00\x00\x00" if v is None else struct.pack("<BI", 1, v)
    return (struct.pack("<BI", mode, ttl) + opt(default) + opt(max_) + opt(heur)
            + struct.pack("<IIIBHQII", keep, swr, sie, targeted, status, req, delay, age))


FRESHNESS = {
    "fixed-ttl": settings(0, 60_000) + b"Cache-Control: max-age=5",
    "max-age-ceiling": settings(1, 0, max_=30_000) + b"Cache-Control: max-age=60\nAge: 10",
    "expires-date": settings(1, 0) + b"Date: " + DATE
    + b"\nExpires: Sun, 09 Sep 2001 01:47:40 GMT",
    "invalid-expires": settings(1, 0) + b"Date: " + DATE + b"\nExpires: 0",
    "heuristic": settings(1, 0, heur=86_400_000) + b"Date: " + DATE
    + b"\nLast-Modified: " + EARLIER,
    "targeted-swr": settings(1, 0, swr=5000, targeted=1)
    + b"CDN-Cache-Control: max-age=10, stale-while-revalidate=30\nCache-Control: no-store",
    "no-cache-validator": settings(1, 0, default=60_000) + b'Cache-Control: no-cache\nETag: "v1"',
    "huge-age": settings(0, 60_000, delay=2000, age=7) + b"Age: 99999999999999999999",
}


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def lv(b):
    return varint(len(b)) + b


def value(path=b"/p", tags=(), headers=((b"content-type", b"application/json"),),
          body=b"{}", vary=None, full_key=None, lean=0):
    """An entry laid out as the codec writes it; the seal is left zero
    (mode 1 of the codec target computes it)."""
    out = bytes([3]) + struct.pack(">QH", 7, 2) + b"\x11" * 8 + b"\x22" * 8 + b"\x00" * 8
    for n in (200, 12345, 1_700_000_000_000, 1_700_000_060_000, 1_700_000_060_000,
              1_700_000_090_000, 1_700_000_070_000, lean):
        out += varint(n)
    out += lv(path) + varint(len(tags)) + b"".join(lv(t) for t in tags)
    out += b"\x00" if full_key is None else b"\x01" + lv(full_key)
    out += b"\x00" if vary is None else b"\x01" + varint(len(vary)) + b"".join(lv(v) for v in vary)
    out += varint(len(headers)) + b"".join(lv(n) + lv(v) for n, v in headers)
    return out + body


CODEC = {
    "raw": b"\x00" + value(),
    "resealed": b"\x01" + value(),
    "resealed-tags-etag": b"\x01" + value(
        path=b"/products/42", tags=(b"products",),
        headers=((b"link", b"</a>; rel=next"), (b"etag", b'"x"'))),
    "resealed-vary-marker": b"\x01" + value(vary=(b"accept-encoding",), headers=(), body=b""),
    "resealed-long-key": b"\x01" + value(full_key=b"/p?" + b"a" * 250, lean=1),
    "parts": b"\x02" + bytes(range(256)),
}


def ranged(length, kind, text):
    """A body length, an ETag kind (0 strong, 1 weak, 2 none), then headers."""
    return struct.pack("<HB", length, kind) + text


RANGE = {
    "first-last": ranged(100, 0, b"Range: bytes=0-9"),
    "open-ended": ranged(100, 1, b"Range: bytes=90-"),
    "suffix": ranged(100, 2, b"Range: bytes=-5"),
    "past-the-end": ranged(10, 0, b"Range: bytes=10-"),
    "several": ranged(100, 0, b"Range: bytes=0-1,5-6"),
    "if-range-strong": ranged(100, 0, b'Range: bytes=1-2\nIf-Range: "s100"'),
    "if-range-weak": ranged(100, 1, b'Range: bytes=1-2\nIf-Range: W/"w100"'),
    "empty-body": ranged(0, 2, b"Range: bytes=-1"),
}


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    every = dict(TEXT, freshness=FRESHNESS, codec=CODEC, range=RANGE)
    for target, seeds in every.items():
        folder = os.path.join(root, target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(folder, "seed-" + name), "wb") as f:
                f.write(data)
    print(sum(len(s) for s in every.values()), "seeds in", len(every), "targets")


if __name__ == "__main__":
    main()
