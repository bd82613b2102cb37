"""A minimal mp4/mov box reader: the sample counts a header declares, read before FFmpeg opens the file.

FFmpeg's demuxer allocates an index entry for every sample a header declares; a constant-size ``stsz`` can declare
10^8 samples in 20 bytes. Reading the count first lets :mod:`~pvnas.data.decode.guards` refuse such a file.
"""

from __future__ import annotations

import os
import re
import struct

_MP4_BOXES = {b"moov", b"mdia", b"minf", b"stbl", b"traf"}  # boxes walked into (and trak)
_MP4_MAX_MOOV = 64 * 2**20  # a 2^21-sample video's moov is ~20 MB: larger ones are not walked


def mp4_declared_samples(path: str) -> int:
    """The largest sample count an mp4/mov header declares for one video track (``stsz``) or one
    fragment (``trun``); 0 for other files. Reads top-level box headers, and the moov/moof boxes."""

    def walk(data: bytes, video: bool) -> int:
        found, off = 0, 0
        while off + 8 <= len(data):
            size, kind = struct.unpack(">I4s", data[off : off + 8])
            if size < 8 or off + size > len(data):
                break
            if kind == b"trak":
                box = data[off + 8 : off + size]
                handler = box.find(b"hdlr")  # mdia's handler type: vide, soun, ...
                found = max(found, walk(box, handler >= 0 and box[handler + 12 : handler + 16] == b"vide"))
            elif kind in _MP4_BOXES:
                found = max(found, walk(data[off + 8 : off + size], video))
            elif kind == b"stsz" and video and size >= 20:
                found = max(found, struct.unpack(">I", data[off + 16 : off + 20])[0])
            elif kind == b"trun" and size >= 16:
                found = max(found, struct.unpack(">I", data[off + 12 : off + 16])[0])
            off += size
        return found

    found, pos = 0, 0
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        while pos + 8 <= end:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            if not re.fullmatch(rb"[a-zA-Z0-9 \xa9]{4}", kind):
                break  # not (or no longer) an mp4 box: FFmpeg makes of the file what it can
            body = 8
            if size == 1 and len(head) == 16:
                size, body = struct.unpack(">Q", head[8:16])[0], 16
            elif size == 0:
                size = end - pos
            if size < body:
                break
            if kind in (b"moov", b"moof") and size <= _MP4_MAX_MOOV:
                f.seek(pos + body)
                found = max(found, walk(f.read(size - body), kind == b"moof"))  # fragments: any track
            pos += size
    return found

