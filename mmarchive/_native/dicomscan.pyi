from collections.abc import Iterable

MAX_DEPTH: int
MAX_ATTRIBUTES: int

# (tag, element_offset, value_offset, value_length, basic_offset_table, fragments); the last two are None
# for native pixel data, else the Basic Offset Table entries and (value_offset, length) per fragment.
PixelDataTuple = tuple[int, int, int, int, tuple[int, ...] | None, tuple[tuple[int, int], ...] | None]
# (transfer_syntax, dataset_offset, size in bytes, values by keyword, pixel data or None)
ScanTuple = tuple[str, int, int, dict[str, tuple[str | int | float, ...]], PixelDataTuple | None]

class Scanner:
    def __init__(self, attributes: Iterable[tuple[str, int, str]]) -> None: ...
    def scan(self, buf: bytes | bytearray | memoryview) -> ScanTuple | None: ...
