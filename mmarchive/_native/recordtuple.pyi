from typing import TypeVar

_T = TypeVar("_T")

def make_record(cls: type[_T], values: tuple[object, ...]) -> _T: ...
