"""Fuzz campaign: do `pvnas data --deep`, a search epoch and `pvnas predict` agree on damaged videos?

Usage: python benchmarks/fuzz_videos.py [--files 200] [--seed 0] [--out DIR] [--timeout 1800] [--memory-mb 4096]

Builds ``--files`` corrupted copies of the real clips of ``tests/data`` and of two generated clips
with many keyframes (:data:`SEEKABLE`, for the read paths that seek), deterministic by seed: byte
flips, container-header damage, mp4 atom fields (moov/stsz/stco/stsc/stts/tkhd/stsd/mdhd), AVI and
Matroska header fields, truncation, zeroed blocks, absurd dimensions written into the headers and
into the coded bitstream (H.264 SPS, MPEG-4 VOL), absurd frame counts, wrong extensions, and a
few clean copies as controls. They are laid out as a ``folder:`` dataset
(``ROOT/{train,val}/<clip>/<file>``), then runs, each as a subprocess in its own session with a
wall-clock limit and an address-space limit per process:

1. ``pvnas data folder:ROOT --deep --json --workers 2``;
2. one search epoch, ``pvnas search --data folder:ROOT --preset tiny --epochs 1 --workers 2``;
3. ``pvnas predict`` on every file (in batches), with a tiny random network as the model file.

Prints one JSON object: the files and their mutations, ``crashes`` (exit codes other than the
documented ones, tracebacks), ``hangs`` (stages killed at their time limit), the peak RSS of
each stage (largest process, and the sampled sum over its session), how many files the search
epoch skipped, predict could not read and ``--deep`` named (would be skipped, or could not be
checked), and the key check ``skipped_not_named``: files that the search or predict skipped
although ``--deep`` passed them (must be empty). ``clean_named`` lists control copies that
``--deep`` named or called damaged (false alarms; must be empty too). ``OUT/files.json`` has
the per-file verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLIPS = sorted(p for p in (ROOT / "tests" / "data").iterdir() if p.suffix in {".mp4", ".avi", ".mkv", ".mov"})
EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
# the real clips have few keyframes (the mkv 3, the others 1); these add the read paths that seek:
# pts mode with B-frames and a keyframe every 12 frames, and count mode (AVI) seeking by dts
SEEKABLE = {"seek_h264.mp4": {"bframes": 2, "keyint": 12}, "seek_mpeg4.avi": {"codec": "mpeg4", "keyint": 10}}


def write_sources(folder: Path) -> list[Path]:
    """The real clips, plus :data:`SEEKABLE` clips written into ``folder`` (moving patterns, 64 frames)."""
    from pvnas.data.encode import write_video

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:72, 0:96].astype(np.float32)
    frames = np.stack([np.stack([127 + 100 * np.sin((xx + 3 * i) / (9 + 4 * c) + yy / 13) for c in range(3)], -1)
                       for i in range(64)]).astype(np.uint8)  # fmt: skip
    for i in range(64):
        frames[i, (3 * i) % 60 : (3 * i) % 60 + 12, (5 * i) % 84 : (5 * i) % 84 + 12] = 255 * (i % 2)
    for name, options in SEEKABLE.items():
        write_video(folder / name, frames, 25, **options)
    return CLIPS + [folder / name for name in SEEKABLE]

# -- container structure --------------------------------------------------------------------------

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def mp4_atoms(data: bytes) -> list[tuple[bytes, int, int, list[int]]]:
    """Every atom as ``(type, offset, size, ancestor offsets)``; stsd entries (avc1) and avcC included."""
    out: list[tuple[bytes, int, int, list[int]]] = []

    def walk(off: int, end: int, parents: list[int]) -> None:
        while off + 8 <= end:
            size, kind = struct.unpack(">I4s", data[off : off + 8])
            if size < 8 or off + size > end:
                return
            out.append((kind, off, size, parents))
            if kind in _MP4_CONTAINERS:
                walk(off + 8, off + size, parents + [off])
            elif kind == b"stsd":
                walk(off + 16, off + size, parents + [off])
            elif kind in (b"avc1", b"mp4v"):
                walk(off + 86, off + size, parents + [off])
            off += size

    walk(0, len(data), [])
    return out


def mp4_atom(data: bytes, kind: bytes) -> tuple[int, int, list[int]] | None:
    found = [(off, size, parents) for k, off, size, parents in mp4_atoms(data) if k == kind]
    return found[0] if found else None


class _Bits:
    """Big-endian bit reader/writer with Exp-Golomb codes (H.264 SPS, MPEG-4 VOL)."""

    def __init__(self, data: bytes = b"") -> None:
        self.bits = "".join(f"{b:08b}" for b in data)
        self.pos = 0

    def u(self, n: int) -> int:
        value = int(self.bits[self.pos : self.pos + n] or "0", 2)
        self.pos += n
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos + zeros] == "0":
            zeros += 1
        self.pos += zeros
        return self.u(zeros + 1) - 1

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)

    @staticmethod
    def ue_bits(value: int) -> str:
        code = f"{value + 1:b}"
        return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def sps_with_size(sps: bytes, width: int, height: int) -> bytes | None:
    """An H.264 SPS NAL rewritten to code ``width`` x ``height`` (rounded up to macroblocks), or None."""
    r = _Bits(_unescape(sps))
    r.u(8)
    profile = r.u(8)
    r.u(16)
    r.ue()
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        if r.ue() == 3:
            r.u(1)
        r.ue(), r.ue(), r.u(1)
        if r.u(1):
            return None  # scaling matrices: not worth parsing here
    r.ue()
    poc = r.ue()
    if poc == 0:
        r.ue()
    elif poc == 1:
        r.u(1), r.se(), r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue(), r.u(1)
    start = r.pos
    r.ue(), r.ue()
    bits = r.bits[:start] + _Bits.ue_bits(-(-width // 16) - 1) + _Bits.ue_bits(-(-height // 16) - 1) + r.bits[r.pos :]
    bits = bits.rstrip("0")  # the old rbsp stop bit stays the last 1
    bits += "0" * (-len(bits) % 8)
    return _escape(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def mp4_with_coded_size(data: bytes, width: int, height: int) -> bytes | None:
    """The mp4/mov with its avcC SPS coding ``width`` x ``height``; None if the layout does not allow it.

    Only when ``moov`` follows ``mdat`` (the chunk offsets stay valid when moov grows)."""
    avcc, moov, mdat = mp4_atom(data, b"avcC"), mp4_atom(data, b"moov"), mp4_atom(data, b"mdat")
    if not (avcc and moov and mdat) or moov[0] < mdat[0]:
        return None
    off, size, parents = avcc
    body = data[off + 8 : off + size]
    if len(body) < 8 or body[5] & 0x1F < 1:
        return None
    sps_len = struct.unpack(">H", body[6:8])[0]
    new_sps = sps_with_size(body[8 : 8 + sps_len], width, height)
    if new_sps is None:
        return None
    delta = len(new_sps) - sps_len
    out = bytearray(data[: off + 8] + body[:6] + struct.pack(">H", len(new_sps)) + new_sps + body[8 + sps_len :])
    out += data[off + size :]
    for parent in parents + [off]:
        (old,) = struct.unpack(">I", out[parent : parent + 4])
        out[parent : parent + 4] = struct.pack(">I", old + delta)
    return bytes(out)


def avi_vol_size(data: bytes, width: int, height: int) -> bytes | None:
    """The AVI with its MPEG-4 Part 2 VOL header coding ``width`` x ``height`` (13 bits each), or None."""
    pos = data.find(b"\x00\x00\x01\x20")
    if pos < 0:
        return None
    r = _Bits(data[pos + 4 : pos + 40])
    r.u(1), r.u(8)
    verid = 1
    if r.u(1):
        verid = r.u(4)
        r.u(3)
    if r.u(4) == 15:
        r.u(16)
    if r.u(1):
        r.u(3)
        if r.u(1):
            r.u(79)
    shape = r.u(2)
    if shape == 3 and verid != 1:
        r.u(4)
    if shape != 0:
        return None
    r.u(1)
    resolution = r.u(16)
    r.u(1)
    if r.u(1):
        r.u(max(1, (resolution - 1).bit_length()))
    start = r.pos + 1  # after the marker bit
    width, height = min(width, 8191), min(height, 8191)
    bits = r.bits[:start] + f"{width:013b}1{height:013b}" + r.bits[start + 27 :]
    patched = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return data[: pos + 4] + patched + data[pos + 4 + len(patched) :]


def put_int(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        return data
    return data[:offset] + struct.pack(fmt, value) + data[offset + size :]


def riff_chunk(data: bytes, fourcc: bytes) -> int | None:
    """Offset of the payload of the first RIFF chunk ``fourcc`` (AVI headers)."""
    pos = data.find(fourcc)
    return pos + 8 if 0 <= pos <= len(data) - 8 else None


def ebml_field(data: bytes, element: bytes) -> tuple[int, int] | None:
    """``(offset, size)`` of the payload of the first Matroska element with this id (1-8 byte size)."""
    pos = data.find(element)
    while 0 <= pos < len(data) - len(element) - 1:
        first = data[pos + len(element)]
        length = 9 - first.bit_length() if first else 0
        if 1 <= length <= 8:
            raw = bytearray(data[pos + len(element) : pos + len(element) + length])
            raw[0] &= 0xFF >> length
            size = int.from_bytes(raw, "big")
            if 1 <= size <= 8:
                return pos + len(element) + length, size
        pos = data.find(element, pos + 1)
    return None


# -- mutations --------------------------------------------------------------------------------------

ABSURD_SIZES = [(60000, 60000), (16000, 16000), (8176, 8176), (16000, 16), (16, 8000), (2, 2)]  # FFmpeg allows ~16000^2
ABSURD_COUNTS = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x1000000, 50_000_000]


def flip_bytes(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    buf = np.frombuffer(data, dtype=np.uint8).copy()
    at = rng.integers(0, len(buf), int(rng.integers(1, 65)))
    buf[at] ^= rng.integers(1, 256, len(at), dtype=np.uint8)
    return buf.tobytes(), f"flip {len(at)} bytes"


def header_damage(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Random bytes in the container header: mp4/mov moov, else the first 8 KiB."""
    moov = mp4_atom(data, b"moov") if ext in (".mp4", ".mov") else None
    lo, hi = (moov[0], moov[0] + moov[1]) if moov else (0, min(len(data), 8192))
    buf = np.frombuffer(data, dtype=np.uint8).copy()
    at = rng.integers(lo, hi, int(rng.integers(1, 17)))
    buf[at] = rng.integers(0, 256, len(at), dtype=np.uint8)
    return buf.tobytes(), f"header: {len(at)} random bytes in [{lo}, {hi})"


def field_damage(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One header field set to an extreme value: mp4 atoms, AVI avih/strh/strf, Matroska elements."""
    value = int(rng.choice([0, 1, 2, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, int(rng.integers(0, 2**32))]))
    if ext in (".mp4", ".mov"):
        fields = {  # atom: (offset of the field in the atom, struct format)
            "stsz.sample_size": (b"stsz", 12, ">I"), "stsz.sample_count": (b"stsz", 16, ">I"),
            "stsz.entry": (b"stsz", 20 + 4 * int(rng.integers(0, 8)), ">I"),
            "stco.count": (b"stco", 12, ">I"), "stco.entry": (b"stco", 16, ">I"),
            "stsc.count": (b"stsc", 12, ">I"), "stsc.samples_per_chunk": (b"stsc", 20, ">I"),
            "stts.count": (b"stts", 12, ">I"), "stts.sample_count": (b"stts", 16, ">I"), "stts.delta": (b"stts", 20, ">I"),
            "stss.entry": (b"stss", 16, ">I"), "ctts.count": (b"ctts", 12, ">I"),
            "tkhd.width": (b"tkhd", 84, ">I"), "tkhd.height": (b"tkhd", 88, ">I"),
            "stsd.count": (b"stsd", 12, ">I"), "avc1.width": (b"avc1", 32, ">H"), "avc1.height": (b"avc1", 34, ">H"),
            "avc1.size": (b"avc1", 0, ">I"), "avcC.sps_length": (b"avcC", 14, ">H"),
            "mdhd.timescale": (b"mdhd", 20, ">I"), "mdhd.duration": (b"mdhd", 24, ">I"), "mvhd.timescale": (b"mvhd", 20, ">I"),
            "moov.size": (b"moov", 0, ">I"), "stsz.size": (b"stsz", 0, ">I"),
        }  # fmt: skip
    elif ext == ".avi":
        fields = {
            "avih.total_frames": (b"avih", 16, "<I"), "avih.width": (b"avih", 32, "<I"), "avih.height": (b"avih", 36, "<I"),
            "strh.scale": (b"strh", 20, "<I"), "strh.rate": (b"strh", 24, "<I"), "strh.length": (b"strh", 32, "<I"),
            "strf.width": (b"strf", 4, "<i"), "strf.height": (b"strf", 8, "<i"), "idx1.size": (b"idx1", -4, "<I"),
            "idx1.entry_offset": (b"idx1", 8, "<I"),
        }  # fmt: skip
    else:
        fields = {"PixelWidth": (b"\xb0", 0, ""), "PixelHeight": (b"\xba", 0, ""), "DefaultDuration": (b"\x23\xe3\x83", 0, ""),
                  "TimecodeScale": (b"\x2a\xd7\xb1", 0, ""), "CodecPrivate.size": (b"\x63\xa2", -1, "B")}  # fmt: skip
    name = str(rng.choice(sorted(fields)))
    tag, rel, fmt = fields[name]
    if ext in (".mp4", ".mov"):
        atom = mp4_atom(data, tag)
        if atom is None:
            return flip_bytes(data, ext, rng)
        if fmt == ">H":
            value &= 0xFFFF
        return put_int(data, atom[0] + rel, fmt, value), f"{name} = {value}"
    if ext == ".avi":
        at = riff_chunk(data, tag)
        if at is None:
            return flip_bytes(data, ext, rng)
        value = value - 2**32 if fmt == "<i" and value >= 2**31 else value
        return put_int(data, at + rel, fmt, value), f"{name} = {value}"
    if fmt == "B":
        pos = data.find(tag)
        if pos < 0:
            return flip_bytes(data, ext, rng)
        return put_int(data, pos + len(tag), "B", value & 0xFF), f"{name} byte = {value & 0xFF}"
    found = ebml_field(data, tag)
    if found is None:
        return flip_bytes(data, ext, rng)
    off, size = found
    value &= (1 << (8 * size)) - 1
    return data[:off] + value.to_bytes(size, "big") + data[off + size :], f"{name} = {value}"


def truncate(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    keep = int(len(data) * rng.uniform(0.05, 0.995))
    return data[:keep], f"truncated to {keep} of {len(data)} bytes"


def zero_blocks(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    buf = bytearray(data)
    blocks = int(rng.integers(1, 4))
    for _ in range(blocks):
        size = int(rng.integers(16, max(17, len(data) // 8)))
        start = int(rng.integers(0, max(1, len(data) - size)))
        buf[start : start + size] = bytes(size)
    return bytes(buf), f"zeroed {blocks} blocks"


def absurd_size(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Absurd frame dimensions in the coded bitstream (H.264 SPS, MPEG-4 VOL) and the container header."""
    w, h = ABSURD_SIZES[int(rng.integers(0, len(ABSURD_SIZES)))]
    if ext in (".mp4", ".mov"):
        coded = mp4_with_coded_size(data, w, h)
        if coded is not None:
            tkhd, avc1 = mp4_atom(coded, b"tkhd"), mp4_atom(coded, b"avc1")
            if tkhd:
                coded = put_int(put_int(coded, tkhd[0] + 84, ">I", w << 16 & 0xFFFFFFFF), tkhd[0] + 88, ">I", h << 16 & 0xFFFFFFFF)
            if avc1:
                coded = put_int(put_int(coded, avc1[0] + 32, ">H", w & 0xFFFF), avc1[0] + 34, ">H", h & 0xFFFF)
            return coded, f"SPS/tkhd/avc1 size {w}x{h}"
    if ext == ".avi":
        coded = avi_vol_size(data, w, h)
        if coded is not None:
            for tag, off, fmt in ((b"avih", 32, "<I"), (b"avih", 36, "<I"), (b"strf", 4, "<i"), (b"strf", 8, "<i")):
                at = riff_chunk(coded, tag)
                if at is not None:
                    coded = put_int(coded, at + off, fmt, w if off in (4, 32) else h)
            return coded, f"VOL/avih/strf size {min(w, 8191)}x{min(h, 8191)} (VOL is 13 bits)"
    out, what = data, []
    for tag, value in ((b"\xb0", w), (b"\xba", h)):
        found = ebml_field(out, tag)
        if found:
            off, size = found
            out = out[:off] + (value & ((1 << 8 * size) - 1)).to_bytes(size, "big") + out[off + size :]
            what.append(str(value))
    return out, f"Matroska PixelWidth/PixelHeight {'x'.join(what) or 'not found'}"


def absurd_count(data: bytes, ext: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Absurd frame/sample counts in the header (mp4 stsz/stts/stsc, AVI avih/strh, Matroska duration)."""
    value = ABSURD_COUNTS[int(rng.integers(0, len(ABSURD_COUNTS)))]
    if ext in (".mp4", ".mov"):
        edits = [(b"stsz", 16), (b"stts", 16)] if rng.random() < 0.5 else [(b"stsz", 12), (b"stsz", 16), (b"stsc", 20)]
        for tag, rel in edits:
            atom = mp4_atom(data, tag)
            if atom:
                data = put_int(data, atom[0] + rel, ">I", value if rel != 12 else 1)
        return data, f"{'/'.join(f'{t.decode()}@{r}' for t, r in edits)} = {value}"
    if ext == ".avi":
        for tag, rel in ((b"avih", 16), (b"strh", 32)):
            at = riff_chunk(data, tag)
            if at is not None:
                data = put_int(data, at + rel, "<I", value)
        return data, f"avih.total_frames/strh.length = {value}"
    found = ebml_field(data, b"\x44\x89")  # Segment Duration (float)
    if found:
        off, size = found
        data = data[:off] + struct.pack(">d" if size == 8 else ">f", float(value) * 1000) + data[off + size :]
    return data, f"Matroska Duration = {value} s"


MUTATIONS: dict[str, Callable[[bytes, str, np.random.Generator], tuple[bytes, str]]] = {
    "flip": flip_bytes,
    "header": header_damage,
    "field": field_damage,
    "truncate": truncate,
    "zero": zero_blocks,
    "size": absurd_size,
    "count": absurd_count,
}
WEIGHTS = {"flip": 4, "header": 3, "field": 4, "truncate": 3, "zero": 3, "size": 2, "count": 2, "clean": 1}


def build_dataset(root: Path, files: int, seed: int, sources: list[Path] = CLIPS) -> list[dict]:
    """``files`` corrupted copies of ``sources`` under ``root/{train,val}/<clip>/``; one record per file.

    Every fifth file goes to val. One clean copy of each clip in each split keeps the dataset
    usable whatever the damage; a tenth of the other files also get a wrong extension.
    """
    rng = np.random.default_rng(seed)
    kinds = list(WEIGHTS)
    p = np.asarray([WEIGHTS[k] for k in kinds], dtype=np.float64)
    records = []
    for i in range(files):
        clip = sources[i % len(sources)]
        split = "val" if i % 5 == 4 else "train"
        kind = "clean" if i < 2 * len(sources) else str(rng.choice(kinds, p=p / p.sum()))
        if i < 2 * len(sources):
            split = "train" if i < len(sources) else "val"
        data, ext = clip.read_bytes(), clip.suffix
        what = "clean copy"
        if kind != "clean":
            data, what = MUTATIONS[kind](data, ext, rng)
            if rng.random() < 0.2:  # a second, different damage now and then
                second = str(rng.choice(list(MUTATIONS)))
                data, more = MUTATIONS[second](data, ext, rng)
                kind, what = f"{kind}+{second}", f"{what}; {more}"
        if i >= 2 * len(sources) and rng.random() < 0.1:
            ext = str(rng.choice([e for e in EXTENSIONS if e != clip.suffix]))
            what += f"; extension {ext}"
        path = root / split / clip.stem / f"f{i:05d}_{kind.replace('+', '_')}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        records.append({"path": str(path), "source": clip.name, "mutation": kind, "detail": what})
    return records


# -- the campaign ---------------------------------------------------------------------------------


def _session_rss_mb(sid: int) -> float:
    """Resident memory of every process in session ``sid`` (the stage and its workers), summed."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # field 6 of stat: session id
                total += int(fields[21])  # field 24: rss in pages
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_stage(cmd: list[str], out: Path, *, timeout: float, memory_mb: int, ok_codes: tuple[int, ...]) -> dict:
    """Run ``cmd`` in a new session, every process of it under an address-space limit; kill the
    session at ``timeout``. Returns exit code, seconds, peak RSS (largest process, from wait4;
    and the sampled sum over the session), and whether it crashed (exit code not in ``ok_codes``
    or a traceback on stderr) or hung (killed at the limit). stdout/stderr go to ``out``.stdout/.stderr.
    """

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.monotonic()
    peak_tree, timed_out = 0.0, False
    with open(f"{out}.stdout", "wb") as so, open(f"{out}.stderr", "wb") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=ROOT, start_new_session=True, preexec_fn=limit)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _session_rss_mb(proc.pid))
            if time.monotonic() - start > timeout and not timed_out:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    try:  # workers left behind by a killed stage
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stderr = Path(f"{out}.stderr").read_text(errors="replace")
    return {
        "cmd": " ".join(cmd[2:]) if cmd[:2] == [sys.executable, "-m"] else " ".join(cmd),
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - start, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_session_rss_mb": round(peak_tree, 1),
        "hung": timed_out,
        "crashed": not timed_out and (proc.returncode not in ok_codes or "Traceback (most recent call last)" in stderr),
    }


def write_model(path: Path, classes: list[str]) -> None:
    """A tiny random network as ``model.pt``: predict needs one, and what it predicts does not matter here."""
    from pvnas.config import NETWORK_PRESETS
    from pvnas.retrain.modelfile import model_record, save_model
    from pvnas.nn.network import network_from_config
    from pvnas.space.genotype import Genotype

    cfg = NETWORK_PRESETS["tiny"]
    model = network_from_config(Genotype.random(0), cfg, len(classes))
    save_model(path, model_record(model, classes, cfg, "tiny"))


def campaign(files: int, seed: int, out: Path, *, timeout: float, memory_mb: int, predict_batch: int = 250) -> dict:
    """Build the dataset, run the three stages, compare what each one could not read."""
    shutil.rmtree(out, ignore_errors=True)
    root = out / "data"
    sources = write_sources(out / "sources")
    records = build_dataset(root, files, seed, sources)
    py = [sys.executable, "-m", "pvnas"]
    stages = {}

    stages["doctor"] = run_stage(py + ["data", f"folder:{root}", "--deep", "--json", "--workers", "2"], out / "doctor",
                                 timeout=timeout, memory_mb=memory_mb, ok_codes=(0, 1, 3))
    named: dict[str, str] = {}
    unchecked: set[str] = set()
    damaged: set[str] = set()
    try:
        report = json.loads((out / "doctor.stdout").read_text())
        for split in report["splits"].values():
            named.update({u["path"]: u["reason"] for u in split.get("unreadable", []) + split.get("unchecked", [])})
            unchecked.update(u["path"] for u in split.get("unchecked", []))
            damaged.update(d["path"] for d in split.get("damaged", []))
    except (ValueError, KeyError):
        stages["doctor"]["crashed"] = True  # stdout must be one JSON report

    search = py + ["search", "--data", f"folder:{root}", "--preset", "tiny", "--epochs", "1", "--workers", "2",
                   "--out", str(out / "search")]  # fmt: skip
    stages["search"] = run_stage(search, out / "search", timeout=timeout, memory_mb=memory_mb, ok_codes=(0,))
    log = (out / "search.stderr").read_text(errors="replace").replace("\r", "\n")
    skipped = set(re.findall(r"skipping video (\S+): ", log))
    metrics = out / "search" / "metrics.jsonl"
    skip_count = json.loads(metrics.read_text().splitlines()[-1])["skipped"] if metrics.exists() else None

    write_model(out / "model.pt", sorted({r["source"].rsplit(".", 1)[0] for r in records}))
    paths = [r["path"] for r in records]
    failed: dict[str, str] = {}
    predict_stages = []
    for i in range(0, len(paths), predict_batch):
        batch = paths[i : i + predict_batch]
        stage = run_stage(py + ["predict", *batch, "--checkpoint", str(out / "model.pt")], out / f"predict{i}",
                          timeout=timeout, memory_mb=memory_mb, ok_codes=(0, 2))
        predict_stages.append(stage)
        try:
            failed.update({r["video"]: r["error"] for r in json.loads((out / f"predict{i}.stdout").read_text()) if "error" in r})
        except ValueError:
            stage["crashed"] = True
    stages["predict"] = {
        "cmd": f"predict <{len(paths)} files in batches of {predict_batch}> --checkpoint model.pt",
        "exit_code": sorted({s["exit_code"] for s in predict_stages}),
        "seconds": round(sum(s["seconds"] for s in predict_stages), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in predict_stages),
        "peak_session_rss_mb": max(s["peak_session_rss_mb"] for s in predict_stages),
        "hung": any(s["hung"] for s in predict_stages),
        "crashed": any(s["crashed"] for s in predict_stages),
    }

    rel = lambda paths: sorted(os.path.relpath(p, root) for p in paths)  # noqa: E731
    clean = {r["path"] for r in records if r["mutation"] == "clean"}
    result = {
        "files": len(records),
        "seed": seed,
        "mutations": {k: sum(r["mutation"].split("+")[0] == k for r in records) for k in WEIGHTS},
        "crashes": [name for name, s in stages.items() if s["crashed"]],
        "hangs": [name for name, s in stages.items() if s["hung"]],
        "stages": stages,
        "named_by_deep": len(named),
        "unchecked_by_deep": len(unchecked),
        "damaged_but_readable": len(damaged),
        "skipped_by_search": len(skipped),
        "search_skip_count": skip_count,
        "failed_predict": len(failed),
        "skipped_not_named": rel((skipped | set(failed)) - set(named)),
        "clean_named": rel(clean & (set(named) | damaged)),
        "named_not_skipped": len(set(named) - skipped - set(failed)),
    }
    (out / "files.json").write_text(json.dumps(
        [{**r, "deep": named.get(r["path"], "damaged" if r["path"] in damaged else "ok"),
          "search": "skipped" if r["path"] in skipped else "-", "predict": failed.get(r["path"], "ok")} for r in records],
        indent=1))  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="corrupted copies to build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds each stage may run")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address space of each process of a stage")
    args = parser.parse_args()
    if args.files < 2 * (len(CLIPS) + len(SEEKABLE)):
        parser.error(f"--files must be >= {2 * (len(CLIPS) + len(SEEKABLE))} (a clean copy of each clip per split)")
    if args.out is not None:
        result = campaign(args.files, args.seed, args.out, timeout=args.timeout, memory_mb=args.memory_mb)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = campaign(args.files, args.seed, Path(tmp), timeout=args.timeout, memory_mb=args.memory_mb)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
