# cython: language_level=3
"""A bounds-checked walk over a DICOM Part 10 file in memory that builds no Dataset.

This is the ingest hot path of the DICOM layer: it checks the 128-byte preamble and "DICM", reads the
group 0002 file meta (explicit VR little endian), then walks the top level of a little endian dataset
(explicit or implicit VR), skipping sequences of defined or undefined length with an explicit stack (no
recursion), and returns the transfer syntax UID, where the dataset starts, the values of the attributes a
:class:`Scanner` was built for (decoded exactly as pydicom decodes them; see mmarchive/dicom/attributes.py
for the value model) and where the pixel data lies (native: one value; encapsulated: the Basic Offset Table
and each fragment). It never touches pixel bytes. Whatever it does not handle it declines by returning
None: big endian, deflated or unknown transfer syntaxes, a missing preamble or file meta, character sets
other than the default, ISO_IR 6, ISO_IR 100 and ISO_IR 192, odd or inconsistent lengths, truncation,
values pydicom would read differently. Every read is checked against the buffer's length. The pydicom
reading in mmarchive/dicom/scan.py is the reference: tests/dicom/test_scan.py holds the two to the same
answers on every test file.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memchr

#: How deep sequences may nest before the scanner declines (each level is an item or a sequence).
MAX_DEPTH = 64
#: How many attributes one Scanner may extract.
MAX_ATTRIBUTES = 128

cdef enum:
    _MAX_DEPTH = 64
    _MAX_ATTRIBUTES = 128

cdef uint32_t _UNDEFINED = 0xFFFFFFFF
cdef uint32_t _ITEM = 0xFFFEE000
cdef uint32_t _ITEM_END = 0xFFFEE00D
cdef uint32_t _SEQUENCE_END = 0xFFFEE0DD
cdef uint32_t _PIXEL_DATA = 0x7FE00010
cdef uint32_t _FLOAT_PIXEL_DATA = 0x7FE00008
cdef uint32_t _DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
cdef uint32_t _TRANSFER_SYNTAX = 0x00020010
cdef uint32_t _META_GROUP_LENGTH = 0x00020000

# How a value is decoded (the value model of mmarchive/dicom/attributes.py, as pydicom reads it).
cdef enum Decoding:
    _MULTI_STRING = 1   # AE-less string VRs pydicom splits after stripping the whole value: AS CS DA DT TM
    _UID = 2            # UI: as _MULTI_STRING, then each value stripped of whitespace
    _TEXT = 3           # LO SH UC: decoded with the character set, each value right-stripped
    _PERSON_NAME = 4    # PN: decoded with the character set, trailing empty component groups dropped
    _INTEGER_STRING = 5  # IS
    _UNSIGNED_16 = 6    # US
    _SIGNED_16 = 7      # SS
    _UNSIGNED_32 = 8    # UL
    _SIGNED_32 = 9      # SL

# Element header kinds of explicit VR.
cdef enum:
    _VR_UNKNOWN = 0
    _VR_SHORT = 1  # 2-byte length
    _VR_LONG = 2   # 2 reserved bytes, 4-byte length

# The stack of the sequence walk.
cdef enum:
    _IN_SEQUENCE = 0
    _IN_ITEM = 1

cdef inline uint16_t _vr_code(char a, char b) noexcept nogil:
    return (<uint16_t><uint8_t>a << 8) | <uint8_t>b

cdef uint16_t _VR_SQ = _vr_code(b'S', b'Q')
cdef uint16_t _VR_UN = _vr_code(b'U', b'N')
cdef uint16_t _VR_OB = _vr_code(b'O', b'B')
cdef uint16_t _VR_OW = _vr_code(b'O', b'W')
cdef uint16_t _VR_UI = _vr_code(b'U', b'I')
cdef uint16_t _VR_UL = _vr_code(b'U', b'L')


cdef inline uint16_t _u16(const uint8_t *p) noexcept nogil:
    return <uint16_t>p[0] | (<uint16_t>p[1] << 8)


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef int _vr_kind(uint16_t code) noexcept nogil:
    """_VR_SHORT or _VR_LONG for a VR of PS3.5 Table 7.1-1 and 7.1-2, else _VR_UNKNOWN."""
    cdef char a = <char>(code >> 8)
    cdef char b = <char>(code & 0xFF)
    if a == b'A':
        if b == b'E' or b == b'S' or b == b'T':
            return _VR_SHORT
    elif a == b'C':
        if b == b'S':
            return _VR_SHORT
    elif a == b'D':
        if b == b'A' or b == b'S' or b == b'T':
            return _VR_SHORT
    elif a == b'F':
        if b == b'L' or b == b'D':
            return _VR_SHORT
    elif a == b'I':
        if b == b'S':
            return _VR_SHORT
    elif a == b'L':
        if b == b'O' or b == b'T':
            return _VR_SHORT
    elif a == b'O':
        if b == b'B' or b == b'D' or b == b'F' or b == b'L' or b == b'V' or b == b'W':
            return _VR_LONG
    elif a == b'P':
        if b == b'N':
            return _VR_SHORT
    elif a == b'S':
        if b == b'H' or b == b'L' or b == b'S' or b == b'T':
            return _VR_SHORT
        if b == b'Q' or b == b'V':
            return _VR_LONG
    elif a == b'T':
        if b == b'M':
            return _VR_SHORT
    elif a == b'U':
        if b == b'I' or b == b'L' or b == b'S':
            return _VR_SHORT
        if b == b'C' or b == b'N' or b == b'R' or b == b'T' or b == b'V':
            return _VR_LONG
    return _VR_UNKNOWN


cdef struct ElementHeader:
    uint32_t tag
    uint16_t vr       # 0 for implicit VR and for item / delimiter tags
    uint32_t length
    Py_ssize_t value  # offset of the value


cdef int _read_header(const uint8_t *p, Py_ssize_t n, Py_ssize_t pos, bint explicit,
                      ElementHeader *h) noexcept nogil:
    """Read the element header at ``pos``; 0 on success, -1 when it is truncated or its VR unknown."""
    cdef int kind
    if pos < 0 or n - pos < 8:
        return -1
    h.tag = (<uint32_t>_u16(p + pos) << 16) | _u16(p + pos + 2)
    if (h.tag >> 16) == 0xFFFE or not explicit:  # items and delimiters carry no VR
        h.vr = 0
        h.length = _u32(p + pos + 4)
        h.value = pos + 8
        return 0
    h.vr = _vr_code(<char>p[pos + 4], <char>p[pos + 5])
    kind = _vr_kind(h.vr)
    if kind == _VR_SHORT:
        h.length = _u16(p + pos + 6)
        h.value = pos + 8
        return 0
    if kind == _VR_LONG:
        if n - pos < 12:
            return -1
        h.length = _u32(p + pos + 8)
        h.value = pos + 12
        return 0
    return -1


cdef Py_ssize_t _skip_undefined(const uint8_t *p, Py_ssize_t n, Py_ssize_t pos, bint explicit) noexcept nogil:
    """Skip the value of an undefined-length element that starts at ``pos`` (its first item or its
    delimiter); return the offset just after its sequence delimiter, or -1 to decline.

    Items of defined length are skipped whole; items of undefined length are walked element by element;
    nested undefined-length elements push a level (UN content is implicit VR, PS3.5 6.2.2).
    """
    cdef uint8_t kind[_MAX_DEPTH]
    cdef uint8_t explicit_at[_MAX_DEPTH]
    cdef int depth = 0
    cdef ElementHeader h
    kind[0] = _IN_SEQUENCE
    explicit_at[0] = explicit
    while True:
        if _read_header(p, n, pos, explicit_at[depth], &h) < 0:
            return -1
        if kind[depth] == _IN_SEQUENCE:
            if h.tag == _ITEM:
                if h.length == _UNDEFINED:
                    if depth + 1 >= _MAX_DEPTH:
                        return -1
                    depth += 1
                    kind[depth] = _IN_ITEM
                    explicit_at[depth] = explicit_at[depth - 1]
                    pos = h.value
                else:
                    if <Py_ssize_t>h.length > n - h.value:
                        return -1
                    pos = h.value + h.length
            elif h.tag == _SEQUENCE_END:
                if h.length != 0:
                    return -1
                pos = h.value
                if depth == 0:
                    return pos
                depth -= 1
            else:
                return -1
        else:  # in an item of undefined length
            if h.tag == _ITEM_END:
                if h.length != 0:
                    return -1
                pos = h.value
                depth -= 1
            elif (h.tag >> 16) == 0xFFFE:
                return -1
            elif h.length == _UNDEFINED:
                if depth + 1 >= _MAX_DEPTH:
                    return -1
                if explicit_at[depth] and h.vr != _VR_SQ and h.vr != _VR_UN and h.vr != _VR_OB \
                        and h.vr != _VR_OW:
                    return -1
                depth += 1
                kind[depth] = _IN_SEQUENCE
                explicit_at[depth] = explicit_at[depth - 1] and h.vr != _VR_UN
                pos = h.value
            else:
                if <Py_ssize_t>h.length > n - h.value:
                    return -1
                pos = h.value + h.length


cdef inline bint _is_plain(const uint8_t *p, Py_ssize_t start, Py_ssize_t end, int decoding,
                           bint utf8) noexcept nogil:
    """True when the bytes are one value that every step of pydicom's decoding leaves as it is.

    No backslash (one value) in any case; a UID of printable ASCII without spaces (pydicom strips it of
    whitespace); text decoded as UTF-8 in ASCII only; any other byte is its own Latin-1 character.
    """
    cdef Py_ssize_t i
    cdef uint8_t c
    if decoding == _UID:
        for i in range(start, end):
            c = p[i]
            if c > 0x7E or c <= 0x20 or c == 0x5C:
                return False
        return True
    if utf8 and (decoding == _TEXT or decoding == _PERSON_NAME):
        for i in range(start, end):
            c = p[i]
            if c > 0x7F or c == 0x5C:
                return False
        return True
    return memchr(p + start, 0x5C, end - start) == NULL


cdef inline Py_ssize_t _rstrip_space_nul(const uint8_t *p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    while end > start and (p[end - 1] == 0x20 or p[end - 1] == 0):
        end -= 1
    return end


cdef object _decode_text(const uint8_t *p, Py_ssize_t start, Py_ssize_t end, bint utf8):
    if utf8:
        return PyUnicode_DecodeUTF8(<const char *>(p + start), end - start, "strict")
    return PyUnicode_DecodeLatin1(<const char *>(p + start), end - start, NULL)


cdef tuple _single_or_empty(list items):
    """pydicom gives one empty string for an empty value: that is (), several values stay as they are."""
    if len(items) == 1 and items[0] == "":
        return ()
    return tuple(items)


cdef object _parse_integer_string(str item):
    """int of one IS value, or None (decline) unless it is [spaces][sign]digits[spaces] with <= 18 digits."""
    cdef str t = item.strip(" ")
    cdef Py_ssize_t i = 0, n = len(t)
    if n > 0 and (t[0] == "+" or t[0] == "-"):
        i = 1
    if n - i < 1 or n - i > 18:
        return None
    while i < n:
        if not ("0" <= t[i] <= "9"):
            return None
        i += 1
    return int(t)


cdef object _decode_value(int decoding, const uint8_t *p, Py_ssize_t start, Py_ssize_t length, bint utf8):
    """The value-model tuple of one element, or None to decline; pydicom's reading exactly."""
    cdef Py_ssize_t end = start + length
    cdef Py_ssize_t trimmed, i, size
    cdef int64_t number
    cdef bint negative
    cdef list items, out
    cdef str s, item
    cdef object v
    if decoding == _UNSIGNED_16 or decoding == _SIGNED_16:
        if length % 2:
            return None
        size = length // 2
        out = [None] * size
        for i in range(size):
            if decoding == _UNSIGNED_16:
                out[i] = _u16(p + start + 2 * i)
            else:
                out[i] = <short>_u16(p + start + 2 * i)
        return tuple(out)
    if decoding == _UNSIGNED_32 or decoding == _SIGNED_32:
        if length % 4:
            return None
        size = length // 4
        out = [None] * size
        for i in range(size):
            if decoding == _UNSIGNED_32:
                out[i] = _u32(p + start + 4 * i)
            else:
                out[i] = <int>_u32(p + start + 4 * i)
        return tuple(out)

    trimmed = _rstrip_space_nul(p, start, end)
    if trimmed == start:  # (spaces and NULs decode the same in every accepted character set)
        return ()
    # Fast paths: one value that every decoding reads as itself.
    if decoding == _INTEGER_STRING:
        i = start
        while i < trimmed and p[i] == 0x20:
            i += 1
        negative = False
        if i < trimmed and (p[i] == 0x2B or p[i] == 0x2D):
            negative = p[i] == 0x2D
            i += 1
        if 0 < trimmed - i <= 18:
            number = 0
            while i < trimmed and 0x30 <= p[i] <= 0x39:
                number = number * 10 + (p[i] - 0x30)
                i += 1
            if i == trimmed:
                return (-number if negative else number,)
    elif _is_plain(p, start, trimmed, decoding, utf8) and \
            not (decoding == _PERSON_NAME and p[trimmed - 1] == 0x3D):
        return (PyUnicode_DecodeLatin1(<const char *>(p + start), trimmed - start, NULL),)

    # The general case, step by step as pydicom.values does it.
    if decoding == _TEXT:
        s = _decode_text(p, start, end, utf8)
        return _single_or_empty([item.rstrip("\0 ") for item in s.split("\\")])
    if decoding == _PERSON_NAME:
        s = _decode_text(p, start, trimmed, utf8)
        out = []
        for item in s.split("\\"):
            items = item.split("=")
            while items and not items[len(items) - 1]:
                items.pop()
            out.append("=".join(items))
        return _single_or_empty(out)
    s = PyUnicode_DecodeLatin1(<const char *>(p + start), length, NULL).rstrip(" \0")
    if not s:
        return ()
    items = s.split("\\")
    if decoding == _UID:
        return _single_or_empty([item.strip() for item in items])
    if decoding == _INTEGER_STRING:
        out = []
        for item in items:
            v = _parse_integer_string(item)
            if v is None:
                return None
            out.append(v)
        return tuple(out)
    return _single_or_empty(items)


cdef int _decoding_of(str vr) except -1:
    if vr in ("AS", "CS", "DA", "DT", "TM"):
        return _MULTI_STRING
    if vr == "UI":
        return _UID
    if vr in ("LO", "SH", "UC"):
        return _TEXT
    if vr == "PN":
        return _PERSON_NAME
    if vr == "IS":
        return _INTEGER_STRING
    if vr == "US":
        return _UNSIGNED_16
    if vr == "SS":
        return _SIGNED_16
    if vr == "UL":
        return _UNSIGNED_32
    if vr == "SL":
        return _SIGNED_32
    raise ValueError(f"the scanner cannot extract values of VR {vr!r}; supported: AS CS DA DT TM UI LO SH UC "
                     "PN IS US SS UL SL")


cdef int _transfer_syntax_kind(str uid):
    """1 explicit VR little endian (native or encapsulated pixel data), 2 implicit, 0 declined."""
    if uid == "1.2.840.10008.1.2":
        return 2
    if uid == "1.2.840.10008.1.2.1" or uid == "1.2.840.10008.1.2.5" or uid.startswith("1.2.840.10008.1.2.4."):
        return 1
    return 0


cdef class Scanner:
    """Extracts the values of a fixed set of attributes ``(keyword, tag, VR)`` from Part 10 files."""

    cdef int count
    cdef uint32_t tags[_MAX_ATTRIBUTES]
    cdef uint16_t vrs[_MAX_ATTRIBUTES]
    cdef int decodings[_MAX_ATTRIBUTES]
    cdef list keywords
    cdef int charset_slot

    def __init__(self, attributes):
        rows = sorted((int(tag), str(keyword), str(vr)) for keyword, tag, vr in attributes)
        if len(rows) > _MAX_ATTRIBUTES:
            raise ValueError(f"a Scanner extracts at most {_MAX_ATTRIBUTES} attributes, got {len(rows)}")
        self.keywords = []
        self.charset_slot = -1
        self.count = 0
        for tag, keyword, vr in rows:
            if not 0x00030000 <= tag <= 0x7FDFFFFF or (self.count and tag == self.tags[self.count - 1]):
                raise ValueError(f"cannot extract tag {tag:08X}: a dataset tag below the pixel data, once")
            if len(vr) != 2:
                raise ValueError(f"bad VR {vr!r}")
            self.decodings[self.count] = _decoding_of(vr)
            self.tags[self.count] = tag
            self.vrs[self.count] = _vr_code(ord(vr[0]), ord(vr[1]))
            if tag == 0x00080005:
                self.charset_slot = self.count
            self.keywords.append(keyword)
            self.count += 1

    def scan(self, buf):
        """Scan a whole Part 10 file held in ``buf`` (bytes, bytearray or a contiguous memoryview).

        Returns ``(transfer_syntax, dataset_offset, size, values, pixel_data)`` or None when declined
        (``size`` is the buffer's length in bytes);
        ``pixel_data`` is None or ``(tag, element_offset, value_offset, value_length,
        basic_offset_table, fragments)``, the last two None for native pixel data, else a tuple of ints
        and a tuple of ``(value_offset, length)``.
        """
        cdef Py_buffer view
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            return self._scan(<const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _scan(self, const uint8_t *p, Py_ssize_t n):
        cdef Py_ssize_t pos, ts_start = -1, meta_end, dataset_offset, end
        cdef Py_ssize_t group_length_end = -1
        cdef uint32_t ts_length = 0, group_length = 0, prev_tag
        cdef ElementHeader h
        cdef int slot = 0, syntax, i
        cdef bint explicit, utf8 = False
        cdef Py_ssize_t found_at[_MAX_ATTRIBUTES]
        cdef uint32_t found_length[_MAX_ATTRIBUTES]
        cdef uint32_t pixel_tag = 0
        cdef Py_ssize_t pixel_element = -1, pixel_value = -1, pixel_end = -1
        cdef list bot = None, fragments = None
        cdef dict values
        cdef object value, charset

        # Preamble, "DICM" and the file meta: explicit VR little endian, group 0002, defined lengths.
        if n < 132 or p[128] != b'D' or p[129] != b'I' or p[130] != b'C' or p[131] != b'M':
            return None
        pos = 132
        while True:
            if n - pos < 8:
                return None
            if _u16(p + pos) != 0x0002:
                break
            if _read_header(p, n, pos, True, &h) < 0 or h.length == _UNDEFINED or h.length % 2:
                return None
            if <Py_ssize_t>h.length > n - h.value:
                return None
            if h.tag == _META_GROUP_LENGTH:
                if pos != 132 or h.length != 4 or h.vr != _VR_UL:
                    return None
                group_length = _u32(p + h.value)
                group_length_end = h.value + 4
            elif h.tag == _TRANSFER_SYNTAX:
                if h.vr != _VR_UI:  # pydicom decodes the value by the VR written, and fails on a wrong one
                    return None
                ts_start = h.value
                ts_length = h.length
            pos = h.value + h.length
        meta_end = pos
        if ts_start < 0:
            return None
        if group_length_end >= 0 and <Py_ssize_t>group_length != meta_end - group_length_end:
            return None
        transfer_syntax = PyUnicode_DecodeLatin1(<const char *>(p + ts_start), ts_length, NULL).rstrip("\0 ")
        transfer_syntax = transfer_syntax.strip()
        syntax = _transfer_syntax_kind(transfer_syntax)
        if syntax == 0:
            return None
        explicit = syntax == 1
        dataset_offset = meta_end

        # pydicom checks the first element's VR and switches when it contradicts the transfer syntax.
        if n - pos >= 6:
            i = 0x41 <= p[pos + 4] <= 0x5A and 0x41 <= p[pos + 5] <= 0x5A
            if i != explicit:
                return None

        for i in range(self.count):
            found_at[i] = -1
        prev_tag = 0x0002FFFF
        while pos < n:
            if _read_header(p, n, pos, explicit, &h) < 0:
                return None
            if (h.tag >> 16) == 0xFFFE or h.tag <= prev_tag:
                return None
            prev_tag = h.tag
            if h.tag == _PIXEL_DATA or h.tag == _FLOAT_PIXEL_DATA or h.tag == _DOUBLE_FLOAT_PIXEL_DATA:
                if pixel_element >= 0:
                    return None
                pixel_tag = h.tag
                pixel_element = pos
                pixel_value = h.value
                if h.length == _UNDEFINED:
                    if h.tag != _PIXEL_DATA or (explicit and h.vr != _VR_OB and h.vr != _VR_OW):
                        return None
                    bot = []
                    fragments = []
                    pos = self._encapsulated(p, n, h.value, bot, fragments)
                    if pos < 0:
                        return None
                else:
                    if <Py_ssize_t>h.length > n - h.value or h.length % 2:
                        return None
                    pos = h.value + h.length
                pixel_end = pos
                continue
            if h.length == _UNDEFINED:
                if explicit and h.vr != _VR_SQ and h.vr != _VR_UN and h.vr != _VR_OB and h.vr != _VR_OW:
                    return None
                pos = _skip_undefined(p, n, h.value, explicit and h.vr != _VR_UN)
                if pos < 0:
                    return None
                while slot < self.count and self.tags[slot] < h.tag:
                    slot += 1
                if slot < self.count and self.tags[slot] == h.tag:
                    return None  # an attribute to extract encoded as a sequence
                continue
            if <Py_ssize_t>h.length > n - h.value or h.length % 2:
                return None
            while slot < self.count and self.tags[slot] < h.tag:
                slot += 1
            if slot < self.count and self.tags[slot] == h.tag:
                if explicit and h.vr != self.vrs[slot] and h.vr != _VR_UN:
                    return None
                found_at[slot] = h.value
                found_length[slot] = h.length
            pos = h.value + h.length

        # Values, decoded once the character set is known.
        if self.charset_slot >= 0 and found_at[self.charset_slot] >= 0:
            charset = _decode_value(_MULTI_STRING, p, found_at[self.charset_slot],
                                    found_length[self.charset_slot], False)
            if charset == ("ISO_IR 192",):
                utf8 = True
            elif not (charset == () or charset == ("ISO_IR 100",) or charset == ("ISO_IR 6",)):
                return None
        values = {}
        for i in range(self.count):
            if found_at[i] < 0:
                continue
            try:
                value = _decode_value(self.decodings[i], p, found_at[i], found_length[i], utf8)
            except UnicodeDecodeError:
                return None
            if value is None:
                return None
            values[self.keywords[i]] = value

        if pixel_element < 0:
            return (transfer_syntax, dataset_offset, n, values, None)
        return (transfer_syntax, dataset_offset, n, values,
                (pixel_tag, pixel_element, pixel_value, pixel_end - pixel_value,
                 None if bot is None else tuple(bot), None if fragments is None else tuple(fragments)))

    cdef Py_ssize_t _encapsulated(self, const uint8_t *p, Py_ssize_t n, Py_ssize_t pos, list bot,
                                  list fragments) except -2:
        """Walk encapsulated pixel data (PS3.5 A.4) from its first item; return the offset after the
        sequence delimiter, or -1 to decline. Fills the Basic Offset Table and the fragments."""
        cdef ElementHeader h
        cdef Py_ssize_t i
        if _read_header(p, n, pos, False, &h) < 0 or h.tag != _ITEM or h.length == _UNDEFINED:
            return -1
        if h.length % 4 or <Py_ssize_t>h.length > n - h.value:
            return -1
        for i in range(h.length // 4):
            bot.append(_u32(p + h.value + 4 * i))
        pos = h.value + h.length
        while True:
            if _read_header(p, n, pos, False, &h) < 0:
                return -1
            if h.tag == _SEQUENCE_END:
                if h.length != 0:
                    return -1
                return h.value
            if h.tag != _ITEM or h.length == _UNDEFINED or <Py_ssize_t>h.length > n - h.value:
                return -1
            fragments.append((h.value, h.length))
            pos = h.value + h.length
