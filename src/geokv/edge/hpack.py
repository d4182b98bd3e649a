"""HPACK (RFC 7541): a header block decoder with the dynamic table and Huffman
decoding, and the few encoder pieces the gRPC edge needs.

The decoder returns header names and values as ``bytes``. Its steady state is cheap:
a whole header block that neither changes the dynamic table nor depends on entries
added since it was last seen is answered from a small per-connection cache, and
Huffman-coded strings are decoded once per distinct string (bounded caches).

The encoder side never indexes: our responses are literals without indexing (RFC 7541
6.2.2), so the peer's decoder table is never touched and a peer's
SETTINGS_HEADER_TABLE_SIZE is honoured whatever its value.
"""

from __future__ import annotations

from collections import deque

DEFAULT_TABLE_SIZE_BYTES = 4096   # SETTINGS_HEADER_TABLE_SIZE initial value (RFC 9113 6.5.2)
ENTRY_OVERHEAD_BYTES = 32         # RFC 7541 4.1
BLOCK_CACHE_ENTRIES_MAX = 64      # decoded header blocks remembered per connection
STRING_CACHE_ENTRIES_MAX = 512    # Huffman-decoded strings remembered per connection
BLOCK_CACHE_BLOCK_BYTES_MAX = 1024  # longer blocks are not worth remembering
INTEGER_BYTES_MAX = 6             # an integer longer than this is garbage (values < 2**35)


class HPACKError(Exception):
    """The header block is malformed: a connection error of type COMPRESSION_ERROR."""


class HeaderListTooLarge(Exception):
    """The decoded header list is larger than the bound; the table stays consistent."""


STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = tuple((n.encode(), v.encode()) for n, v in (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
))
STATIC_LEN = len(STATIC_TABLE)  # 61

# The Huffman code of RFC 7541 Appendix B is canonical, so the code is fully given by
# each symbol's code length (symbols 0..255, then EOS = 256). One character per length:
# '5'..'9' and 'a'..'f' for 5..15, 'g'.. for 16 and up.
_HUFFMAN_LENGTHS = (
    "dnsssssssoussussssssssusssssssss6aacd68baa8b8666555666666678f6cad677777777777777777"
    "77777878djde6f56565666577666567655677777fbedskmkkmmmnmnnnnnonoomnonnnnlmnmnnomlkmm"
    "nnlnmmolmnnllmlnmnnkmmmnmmnqqkjmnmpqqqrrqopjlqrrqrollqqsrrrkoklmllnmmppooqnqrqqrr"
    "rrrsrrrrrqu")


def _length_of(ch: str) -> int:
    return int(ch) if ch.isdigit() else (10 + ord(ch) - ord("a") if ch <= "f" else 16 + ord(ch) - ord("g"))


HUFFMAN_CODE_LENGTHS: tuple[int, ...] = tuple(_length_of(c) for c in _HUFFMAN_LENGTHS)
assert len(HUFFMAN_CODE_LENGTHS) == 257


def huffman_codes() -> list[int]:
    """The canonical code of every symbol (0..256), derived from the lengths."""
    codes = [0] * 257
    order = sorted(range(257), key=lambda s: (HUFFMAN_CODE_LENGTHS[s], s))
    code, prev_len = 0, HUFFMAN_CODE_LENGTHS[order[0]]
    for i, sym in enumerate(order):
        n = HUFFMAN_CODE_LENGTHS[sym]
        if i:
            code = (code + 1) << (n - prev_len)
        prev_len = n
        codes[sym] = code
    return codes


# A nibble-driven automaton over the code tree: state = internal node, input = 4 bits.
# _HUFF_TABLE[state * 16 + nibble] = (next_state, symbol or -1, ok) ; ok False = EOS seen.
_HUFF_TABLE: list[tuple[int, int, bool]] = []
_HUFF_ACCEPT: list[bool] = []  # may the string end in this state (padding: < 8 one-bits)


def _build_huffman_automaton() -> None:
    codes = huffman_codes()
    children: list[list[int]] = [[-1, -1]]  # internal nodes; a leaf is ~symbol (negative)
    for sym in range(257):
        n, code, node = HUFFMAN_CODE_LENGTHS[sym], codes[sym], 0
        for i in range(n - 1, -1, -1):
            bit = (code >> i) & 1
            if i == 0:
                children[node][bit] = ~sym
            else:
                if children[node][bit] == -1:
                    children[node][bit] = len(children)
                    children.append([-1, -1])
                node = children[node][bit]
    # accepting states: reached from the root by 0..7 one-bits
    accept = [False] * len(children)
    node = 0
    for _ in range(8):
        accept[node] = True
        node = children[node][1]
        if node < 0:
            break
    table: list[tuple[int, int, bool]] = []
    for state in range(len(children)):
        for nib in range(16):
            node, sym, ok = state, -1, True
            for i in range(3, -1, -1):
                nxt = children[node][(nib >> i) & 1]
                if nxt < 0:
                    s = ~nxt
                    if s == 256:
                        ok = False
                        break
                    sym, node = s, 0
                else:
                    node = nxt
            table.append((node, sym, ok))
    _HUFF_TABLE.extend(table)
    _HUFF_ACCEPT.extend(accept)


_build_huffman_automaton()


_HUFF_BYTE_STEPS: dict[int, tuple[int, bytes, bool]] = {}  # (state << 8 | byte) -> step, filled lazily
_HUFF_BYTE_STEPS_MAX = 1 << 16  # every (state, byte) pair: the memo cannot grow past this


def _huffman_byte_step(key: int) -> tuple[int, bytes, bool]:
    """One input byte from one state: two nibble steps, memoised (at most two symbols
    end within 8 bits, as the shortest code is 5 bits)."""
    table = _HUFF_TABLE
    state, b = key >> 8, key & 0xFF
    out = bytearray()
    state, sym, ok = table[(state << 4) | (b >> 4)]
    if sym >= 0:
        out.append(sym)
    if ok:
        state, sym, ok = table[(state << 4) | (b & 15)]
        if sym >= 0:
            out.append(sym)
    step = (state, bytes(out), ok)
    if len(_HUFF_BYTE_STEPS) < _HUFF_BYTE_STEPS_MAX:
        _HUFF_BYTE_STEPS[key] = step
    return step


def huffman_decode(data: bytes) -> bytes:
    steps = _HUFF_BYTE_STEPS
    parts = []
    state = 0
    for b in data:
        key = (state << 8) | b
        step = steps.get(key)
        if step is None:
            step = _huffman_byte_step(key)
        state, emitted, ok = step
        if not ok:
            raise HPACKError("EOS symbol in a Huffman-coded string")
        if emitted:
            parts.append(emitted)
    if not _HUFF_ACCEPT[state]:
        raise HPACKError("bad padding in a Huffman-coded string")
    return b"".join(parts)


def huffman_encode(data: bytes) -> bytes:
    """Huffman-code ``data`` (used by tests and tools; responses do not need it)."""
    codes = huffman_codes()
    acc, nbits = 0, 0
    for b in data:
        n = HUFFMAN_CODE_LENGTHS[b]
        acc = (acc << n) | codes[b]
        nbits += n
    pad = (-nbits) % 8
    acc = (acc << pad) | ((1 << pad) - 1)
    nbits += pad
    return acc.to_bytes(nbits // 8, "big") if nbits else b""


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 5.1: ``first`` holds the bits above the prefix in the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"".join((b"\x00", encode_integer(len(name), 7), name, encode_integer(len(value), 7), value))


class Decoder:
    """One connection's HPACK decoding context (the peer's encoder's mirror)."""

    __slots__ = ("table", "table_bytes", "table_bytes_max", "settings_table_bytes_max", "inserts",
                 "_blocks", "_strings")

    def __init__(self, settings_table_bytes_max: int = DEFAULT_TABLE_SIZE_BYTES) -> None:
        self.table: deque[tuple[bytes, bytes]] = deque()  # newest first: index 62 is table[0]
        self.table_bytes = 0
        self.table_bytes_max = settings_table_bytes_max
        self.settings_table_bytes_max = settings_table_bytes_max  # what we advertised
        self.inserts = 0  # changes whenever the table does: part of the block cache key
        self._blocks: dict[tuple[int, bytes], list[tuple[bytes, bytes]]] = {}
        self._strings: dict[bytes, bytes] = {}

    def _evict_to(self, limit: int) -> None:
        table = self.table
        while self.table_bytes > limit:
            n, v = table.pop()
            self.table_bytes -= len(n) + len(v) + ENTRY_OVERHEAD_BYTES

    def _add(self, name: bytes, value: bytes) -> None:
        self.inserts += 1
        size = len(name) + len(value) + ENTRY_OVERHEAD_BYTES
        if size > self.table_bytes_max:
            self.table.clear()
            self.table_bytes = 0
            return
        self._evict_to(self.table_bytes_max - size)
        self.table.appendleft((name, value))
        self.table_bytes += size

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HPACKError("header index 0")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        i = index - STATIC_LEN - 1
        if i >= len(self.table):
            raise HPACKError(f"header index {index} is beyond the dynamic table")
        return self.table[i]

    def decode(self, block: bytes, list_bytes_max: int) -> list[tuple[bytes, bytes]]:
        """Decode one complete header block. Raises HPACKError (connection error) or
        HeaderListTooLarge (after decoding the whole block, so the table stays in step).
        """
        key = (self.inserts, block)
        hit = self._blocks.get(key)
        if hit is not None:
            return hit
        inserts_before = self.inserts
        headers: list[tuple[bytes, bytes]] = []
        list_bytes = 0
        too_large = False
        n = len(block)
        pos = 0
        strings = self._strings
        table = self.table
        update_allowed = True
        while pos < n:
            b = block[pos]
            if b & 0x80:  # indexed header field
                if b != 0xFF:
                    idx = b & 0x7F
                    pos += 1
                else:
                    idx, pos = self._integer(block, pos, 7)
                if 0 < idx <= STATIC_LEN:
                    name, value = STATIC_TABLE[idx - 1]
                elif STATIC_LEN < idx <= STATIC_LEN + len(table):
                    name, value = table[idx - STATIC_LEN - 1]
                else:
                    raise HPACKError(f"header index {idx} is out of range")
                update_allowed = False
            elif b & 0x40 or not b & 0x20:  # literal (incremental indexing / without / never)
                prefix = 6 if b & 0x40 else 4
                if b & ((1 << prefix) - 1):
                    idx, pos = self._integer(block, pos, prefix)
                    name = self._entry(idx)[0]
                else:
                    pos += 1
                    name, pos = self._string(block, pos, strings)
                value, pos = self._string(block, pos, strings)
                if b & 0x40:
                    self._add(name, value)
                update_allowed = False
            else:  # dynamic table size update (001xxxxx)
                if not update_allowed:
                    raise HPACKError("dynamic table size update after a header field")
                size, pos = self._integer(block, pos, 5)
                if size > self.settings_table_bytes_max:
                    raise HPACKError(f"dynamic table size update to {size} > {self.settings_table_bytes_max}")
                self.table_bytes_max = size
                self._evict_to(size)
                self.inserts += 1
                continue
            list_bytes += len(name) + len(value) + ENTRY_OVERHEAD_BYTES
            if list_bytes > list_bytes_max:
                too_large = True
                headers.clear()  # an HPACK bomb must not grow memory: stop keeping fields
            elif not too_large:
                headers.append((name, value))
        if too_large:
            raise HeaderListTooLarge(list_bytes)
        if self.inserts == inserts_before and n <= BLOCK_CACHE_BLOCK_BYTES_MAX:
            if len(self._blocks) >= BLOCK_CACHE_ENTRIES_MAX:
                self._blocks.clear()
            self._blocks[key] = headers
        return headers

    @staticmethod
    def _integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = block[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        n = len(block)
        while True:
            if pos >= n:
                raise HPACKError("truncated integer")
            b = block[pos]
            pos += 1
            value += (b & 127) << shift
            shift += 7
            if not b & 128:
                return value, pos
            if shift >= 7 * INTEGER_BYTES_MAX:
                raise HPACKError("integer too long")

    def _string(self, block: bytes, pos: int, strings: dict[bytes, bytes]) -> tuple[bytes, int]:
        if pos >= len(block):
            raise HPACKError("truncated string")
        huff = block[pos] & 0x80
        length, pos = self._integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HPACKError("string runs past the end of the header block")
        raw = block[pos:end]
        if not huff:
            return raw, end
        s = strings.get(raw)
        if s is None:
            s = huffman_decode(raw)
            if len(strings) >= STRING_CACHE_ENTRIES_MAX:
                strings.clear()
            strings[raw] = s
        return s, end
