"""HTTP/2 (RFC 9113) wire constants and frame builders."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB

# settings
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW_BYTES = 65535
DEFAULT_MAX_FRAME_BYTES = 16384
MAX_FRAME_BYTES_LIMIT = (1 << 24) - 1
WINDOW_BYTES_LIMIT = (1 << 31) - 1

FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits as 16+8), type, flags, stream id
_U32 = struct.Struct(">L")
_U32U32 = struct.Struct(">LL")
MESSAGE_PREFIX = struct.Struct(">BL")  # gRPC: compressed flag, message length


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FRAME_HEADER.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def frame_header(ftype: int, flags: int, sid: int, length: int) -> bytes:
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, ftype, flags, sid)


def settings_frame(settings: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in settings.items()))


SETTINGS_ACK_FRAME = frame(SETTINGS, ACK, 0)


def window_update_frame(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, _U32.pack(increment))


def rst_stream_frame(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, _U32.pack(code))


def goaway_frame(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32U32.pack(last_sid, code) + debug)


def u32(b: bytes) -> int:
    return _U32.unpack(b)[0]
