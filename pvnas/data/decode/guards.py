"""What no real dataset holds, refused before FFmpeg allocates it.

Damaged files must cost a training worker neither its memory nor its time, so the decoder refuses,
with a :class:`DecodeError`, what no real dataset holds (a corrupt header or bitstream can claim
anything, and FFmpeg would allocate it):

* frames over :data:`MAX_PIXELS` (8192 x 4320, DCI 8K; one RGB frame is then <= 106 MB): checked on
  the size the codec reports before the first decode, and enforced by FFmpeg's ``max_pixels`` on
  every later frame, so a size change mid-stream cannot allocate more either;
* a long/short side ratio over :data:`MAX_ASPECT` (16; the widest real formats are ~4:1): a
  short-side resize would blow the long side up to 16x the crop scale or more;
* more than :data:`MAX_PACKETS` packets (2^21, over 19 hours at 30 fps): the index pass keeps a
  few numbers per packet and stops counting there. An mp4/mov sample table is checked against
  the same bound before FFmpeg opens the file: its demuxer allocates an index entry for every
  sample a header declares, and a constant-size ``stsz`` can declare 10^8 samples in 20 bytes
  (gigabytes of index for a file of kilobytes).
"""

from __future__ import annotations

import av

from pvnas.data.decode.decoder import DecodeError
from pvnas.data.decode.mp4 import mp4_declared_samples

MAX_PIXELS = 8192 * 4320
MAX_ASPECT = 16
MAX_PACKETS = 2**21
CODEC_OPTIONS = {"max_pixels": str(MAX_PIXELS)}


def open_input(path: str) -> av.container.InputContainer:
    """``av.open`` for reading untrusted files.

    Metadata that is not UTF-8 (a damaged header) gets replacement characters instead of raising,
    and the codecs FFmpeg opens to probe the streams refuse frames over :data:`MAX_PIXELS` too; a
    format that lists its streams only by probing them (MPEG-TS/PS) cannot take per-stream
    options and is probed under FFmpeg's own size check (about 268 megapixels).
    """
    try:
        return av.open(path, metadata_errors="replace", stream_options=[CODEC_OPTIONS] * 64)
    except av.FFmpegError:
        raise
    except ValueError:  # PyAV: this format exposes no streams before probing
        return av.open(path, metadata_errors="replace")


def check_size(path: str, width: int, height: int) -> None:
    """Refuse frame sizes no dataset holds (see the module docstring): they cost memory, not clips."""
    if width * height > MAX_PIXELS:
        raise DecodeError(path, f"frame size {width}x{height} is over the limit of {MAX_PIXELS / 1e6:.1f} megapixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise DecodeError(path, f"frame size {width}x{height}: a side ratio over {MAX_ASPECT} is not a real video")


def check_declared_samples(path: str) -> None:
    """Refuse an mp4/mov whose header declares more than :data:`MAX_PACKETS` samples (before FFmpeg opens it)."""
    declared = mp4_declared_samples(path)
    if declared > MAX_PACKETS:
        raise DecodeError(path, f"the mp4 header declares {declared} frames (more than {MAX_PACKETS}): a damaged table")
