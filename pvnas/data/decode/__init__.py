"""Video decoding behind one small interface (:class:`Decoder`): exact frames by index, decoding only what is
needed, damaged files refused before they cost memory or time.

Modules: ``decoder`` (the protocol, :class:`VideoInfo`, :class:`DecodeError`), ``pyav`` (the default backend and
its seek strategy), ``decord`` (optional), ``cached`` (whole videos kept in memory for training), ``guards``
(size and packet limits), ``mp4`` (the header check they use).
"""

from __future__ import annotations

from pvnas.data.decode.decoder import (
    VIDEO_EXTENSIONS,
    DecodeError,
    Decoder,
    VideoInfo,
    VideoScan,
    is_video_file,
    rotate_frames,
)
from pvnas.data.decode.cached import CachedDecoder
from pvnas.data.decode.decord import DecordDecoder
from pvnas.data.decode.guards import MAX_ASPECT, MAX_PACKETS, MAX_PIXELS
from pvnas.data.decode.pyav import PyAVDecoder
from pvnas.errors import ConfigError

__all__ = [
    "DECODERS", "MAX_ASPECT", "MAX_PACKETS", "MAX_PIXELS", "VIDEO_EXTENSIONS", "CachedDecoder", "DecodeError",
    "Decoder", "DecordDecoder", "PyAVDecoder", "VideoInfo", "VideoScan", "get_decoder", "is_video_file",
    "rotate_frames",
]

DECODERS = {"pyav": PyAVDecoder, "decord": DecordDecoder}


def get_decoder(name: str = "pyav", **kwargs) -> Decoder:
    """Build a decoder backend by name (``pyav`` or ``decord``)."""
    try:
        cls = DECODERS[name]
    except KeyError:
        raise ConfigError(f"unknown decoder {name!r}; expected one of: {', '.join(DECODERS)}") from None
    return cls(**kwargs)
