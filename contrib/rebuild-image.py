#!/usr/bin/env python3
"""Rebuild a database image from an incremental chain with nothing but
`age`, `zstd` and this script: no sqlite-backup needed.

    rebuild-image.py MANIFEST KEY FOLDER OUT [IDENTITY]

MANIFEST is a manifest file (`manifests/<run id>.json`), KEY the entry's key
(its `.pageidx`), FOLDER where the objects are (a local backup folder, or a
download of the bucket's keys), OUT the image to write. IDENTITY is the age
identity file of a sealed chain (every pack an age file); leave it out for a
plain one. The layout is in docs/src/encryption.md and incremental.md.
"""

import base64
import json
import struct
import subprocess
import sys


def plain(path, identity):
    """A pack's bytes after age (if sealed) and zstd (every frame)."""
    data = open(path, "rb").read()
    if identity:
        data = subprocess.run(["age", "-d", "-i", identity], input=data,
                              capture_output=True, check=True).stdout
    return subprocess.run(["zstd", "-d", "-c"], input=data,
                          capture_output=True, check=True).stdout


def varints(data, at=0):
    """LEB128 varints from `data[at:]`, with where each one ends."""
    value, shift = 0, 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            yield value, at
            value, shift = 0, 0


def pack_groups(stored):
    """The packs as (key, xor), from the manifest's groups or from their
    packed form "zstd+postcard+base64:": postcard's wire format, where an
    integer is a varint, a string or list is its length then its items, a
    bool one byte and each SHA-256 its 32 bytes."""
    if isinstance(stored, list):
        return [(g["prefix"] + name, g.get("xor", False))
                for g in stored for name, *_ in g["packs"]]
    form, _, text = stored.partition(":")
    if form != "zstd+postcard+base64":
        sys.exit(f"pack_groups: unknown form {form!r}")
    raw = subprocess.run(["zstd", "-d", "-c"], input=base64.b64decode(text),
                         capture_output=True, check=True).stdout
    at = 0

    def number():
        nonlocal at
        value, at = next(varints(raw, at))
        return value

    def text():
        nonlocal at
        n = number()
        at += n
        return raw[at - n:at].decode()

    packs = []
    for _ in range(number()):
        prefix, _index = text(), text()
        at += 32  # the index's SHA-256
        if raw[at] > 1:
            sys.exit("pack_groups: damaged (a flag that is not 0 or 1)")
        xor = raw[at] == 1
        at += 1
        for _ in range(number()):
            name = text()
            number()  # size
            at += 32  # SHA-256
            number(), number()  # pages, index_at
            packs.append((prefix + name, xor))
    if at != len(raw):
        sys.exit("pack_groups: damaged (bytes after the groups)")
    return packs


def runs(stored):
    """[first, count, pack, at] runs, from the manifest's arrays or from a
    packed form: "zstd+varint+base64:" (count, pack, zigzag skip per run) or
    the older "zstd+base64:" (count u64, pack u32, at u64, little-endian)."""
    if isinstance(stored, list):
        return stored
    form, _, text = stored.partition("base64:")
    raw = subprocess.run(["zstd", "-d", "-c"], input=base64.b64decode(text),
                         capture_output=True, check=True).stdout
    if form == "zstd+varint+":
        values = [v for v, _ in varints(raw)]
        parts, ends = [], {}
        for count, pack, zz in zip(values[0::3], values[1::3], values[2::3]):
            at = ends.get(pack, 0) + ((zz >> 1) ^ -(zz & 1))
            ends[pack] = at + count
            parts.append((count, pack, at))
    else:
        parts = [struct.unpack_from("<QIQ", raw, i) for i in range(0, len(raw), 20)]
    out, first = [], 0
    for count, pack, at in parts:
        out.append([first, count, pack, at])
        first += count
    return out


def main(manifest, key, folder, out, identity=None):
    entry = next(e for e in json.load(open(manifest))["entries"] if e["key"] == key)
    size, pages = entry["page_size"], entry["pages"]
    packs = [dict(key=key, xor=xor) for key, xor in pack_groups(pages["pack_groups"])]
    image = bytearray(size * entry["page_count"])
    spans = {}
    for first, count, pack, at in runs(pages["runs"]):
        spans.setdefault(pack, []).append((first, count, at))
    for pack, its in spans.items():  # each pack read once
        data = plain(f"{folder}/{packs[pack]['key']}", identity)
        for first, count, at in its:
            image[first * size:(first + count) * size] = data[at * size:(at + count) * size]
    # XOR packs: the deltas' page numbers (a count, the first page, then
    # steps), then one page-sized delta each, XORed into the image.
    for p in (p for p in packs if p["xor"]):
        data = plain(f"{folder}/{p['key']}", identity)
        numbers = varints(data)
        n, body = next(numbers)
        page_numbers = []
        for i in range(n):
            step, body = next(numbers)
            page_numbers.append(step if i == 0 else page_numbers[-1] + step)
        for i, page in enumerate(page_numbers):
            delta = data[body + i * size:body + (i + 1) * size]
            o = page * size
            mixed = int.from_bytes(image[o:o + size], "little") ^ int.from_bytes(delta, "little")
            image[o:o + size] = mixed.to_bytes(size, "little")
    open(out, "wb").write(image)


if __name__ == "__main__":
    main(*sys.argv[1:])
