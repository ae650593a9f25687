"""WADO-RS rendered resources: one frame of a stored image decoded, windowed and encoded as JPEG or PNG.

:func:`rendering` reads a request's Accept (or ``accept`` query parameter) and its ``window``, ``quality``
and ``viewport`` parameters (PS3.18 8.3.5) into a :class:`Rendering`; :func:`render` turns one frame's
stored bytes (read by :mod:`mmarchive.dicom.web.frames`, so only that frame comes from the store) into
an 8-bit image following PS3.4's grayscale pipeline: pydicom decodes the frame (native, or with the
decoders installed for its transfer syntax; YBR colour is converted to RGB by pydicom), the Modality LUT
(rescale slope and intercept, or a Modality LUT Sequence) is applied, then the VOI window: the request's
``window`` (linear, linear-exact or sigmoid, PS3.3 C.11.2.1.2), else the file's first WindowCenter and
WindowWidth with its VOILUTFunction, else the frame's own minimum to maximum; MONOCHROME1 is inverted.
Colour images are shown as stored (PALETTE COLOR through its lookup tables). Pillow crops and scales
for ``viewport`` and encodes. A compressed frame whose codestream header declares another image size than
Rows and Columns is damaged and refused before decoding (:func:`check_codestream`, 500). Pixel data no
installed decoder can read is 406 (no acceptable
representation can be produced); bad parameters are 400.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.uid import UID

from mmarchive.dicom.web.errors import NotAcceptableError, PixelDecodeError
from mmarchive.dicom.web.frames import EXPLICIT_LITTLE, NATIVE, Frames
from mmarchive.dicom.web.multipart import accepted
from mmarchive.errors import InvalidInputError

JPEG = "image/jpeg"
PNG = "image/png"
#: JPEG quality when the request gives none.
DEFAULT_QUALITY = 90
#: The largest viewport side served (a guard against requests for huge images).
MAX_VIEWPORT = 8192
_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


class Window(NamedTuple):
    """A VOI window: center, width and function (``linear``, ``linear-exact`` or ``sigmoid``)."""

    center: float
    width: float
    function: str = "linear"


class Viewport(NamedTuple):
    """The output size to fit in and the source region (None: the whole image)."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh


class Rendering(NamedTuple):
    """What a rendered request asks for."""

    media_type: str
    quality: int
    window: Window | None
    viewport: Viewport | None


def rendering(accept_header: str, params: Any) -> Rendering:
    """The rendering a request asks for; ``params`` is its query parameters (a starlette QueryParams).

    NotAcceptableError (406) when neither JPEG nor PNG is acceptable; InvalidInputError (400) for a
    malformed parameter. Parameters this server does not support (``annotation``, ``charset``,
    ``iccprofile``) are ignored, as PS3.18 8.3.5 allows."""
    mtype = _media_type(params.get("accept") or accept_header or "*/*")
    quality = DEFAULT_QUALITY
    if "quality" in params:
        quality = _integer(params["quality"], "quality")
        if not 1 <= quality <= 100:
            raise InvalidInputError(f"quality must be from 1 to 100, not {quality}")
    window = _window(params["window"]) if "window" in params else None
    viewport = _viewport(params["viewport"]) if "viewport" in params else None
    return Rendering(mtype, quality, window, viewport)


def _media_type(accept: str) -> str:
    for mtype, _ in accepted(accept):
        if mtype in (JPEG, PNG):
            return mtype
        if mtype in ("*/*", "*", "image/*"):
            return JPEG
    raise NotAcceptableError(f"rendered images are served as {JPEG} or {PNG} only, not {accept!r}")


def _integer(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, not {text!r}") from None


def _number(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidInputError(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, not {text!r}")
    return value


def _window(text: str) -> Window:
    """``center,width,function`` (PS3.18 8.3.5.1.4); the function is required there, linear if absent."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 3):
        raise InvalidInputError(f"window must be center,width,function (e.g. 40,400,linear), not {text!r}")
    center, width = _number(items[0], "window center"), _number(items[1], "window width")
    function = items[2].lower() if len(items) == 3 else "linear"
    if function not in _FUNCTIONS:
        raise InvalidInputError(f"the window function must be one of {', '.join(_FUNCTIONS)}, not "
                                f"{items[2]!r}")
    if width < 1 if function == "linear" else width <= 0:
        least = "1 or more" if function == "linear" else "over 0"
        raise InvalidInputError(f"the window width must be {least} for a {function} window, not {width:g}")
    return Window(center, width, function)


def _viewport(text: str) -> Viewport:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (PS3.18 8.3.5.1.3); sx, sy default 0, sw, sh the image's rest."""
    items = [t.strip() for t in text.split(",")]
    if len(items) not in (2, 6):
        raise InvalidInputError(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {text!r}")
    vw, vh = (_integer(t, "viewport width/height") for t in items[:2])
    if not (1 <= vw <= MAX_VIEWPORT and 1 <= vh <= MAX_VIEWPORT):
        raise InvalidInputError(f"the viewport width and height must be from 1 to {MAX_VIEWPORT}, "
                                f"not {vw}x{vh}")
    if len(items) == 2:
        return Viewport(vw, vh)
    region = [_integer(t, "viewport source region") if t else -1 for t in items[2:]]
    sx, sy, sw, sh = region
    sx, sy = max(sx, 0), max(sy, 0)
    if (items[4] and sw <= 0) or (items[5] and sh <= 0):
        raise InvalidInputError(f"the source region's width and height must be over 0 (flipping is not "
                                f"supported), not {text!r}")
    return Viewport(vw, vh, (sx, sy, sw, sh))


def check_decodable(layout: Frames) -> None:
    """NotAcceptableError unless a pixel decoder for the layout's transfer syntax is installed."""
    if layout.transfer_syntax in NATIVE:
        return
    try:
        available = get_decoder(layout.transfer_syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise NotAcceptableError(
            f"pixel data in transfer syntax {layout.transfer_syntax} cannot be decoded by this server (no "
            "decoder installed for it), so it cannot be rendered; retrieve the frames as stored instead")


#: JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15) and JPEG-LS's SOF55.
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})


def codestream_size(frame: bytes) -> tuple[str, int, int] | None:
    """The image size a frame's codestream header declares: ``(what, rows, columns)`` from a JPEG 2000
    SIZ marker segment (image area less its offset) or a JPEG / JPEG-LS start-of-frame segment; None when
    the frame is neither (RLE, a JP2 file wrapper) or the header does not give a size (JPEG's DNL)."""
    if frame[:4] == b"\xff\x4f\xff\x51" and len(frame) >= 24:  # SOC, SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
        x, y, x0, y0 = struct.unpack(">IIII", frame[8:24])
        return "JPEG 2000 codestream's SIZ segment", y - y0, x - x0
    if frame[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(frame) and frame[at] == 0xFF:
        marker = frame[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SOF:
            if at + 9 > len(frame):
                return None
            rows, columns = struct.unpack(">HH", frame[at + 5:at + 9])
            return ("JPEG-LS" if marker == 0xF7 else "JPEG") + " start of frame", rows, columns
        at += 2 + int.from_bytes(frame[at + 2:at + 4], "big")
    return None


def check_codestream(header: Dataset, layout: Frames, frame: bytes) -> None:
    """PixelDecodeError unless the frame's codestream declares the image size the instance's Rows and
    Columns give: a frame that disagrees is damaged (or was written wrongly) and is not handed to a
    decoder, which might otherwise try to allocate the image its header claims."""
    if layout.transfer_syntax in NATIVE:
        return
    declared = codestream_size(frame)
    if declared is None:
        return
    what, rows, columns = declared
    if rows == 0 and what.startswith("JPEG start"):  # height given later by a DNL marker
        rows = int(header.Rows)
    if (rows, columns) != (int(header.Rows), int(header.Columns)):
        raise PixelDecodeError(
            f"the stored frame does not match the instance: its {what} declares {columns}x{rows} pixels "
            f"(columns x rows) but the instance's Columns and Rows are {header.Columns}x{header.Rows}, so "
            "the stored pixel data is damaged or was written wrongly and is not rendered; the frame can "
            "still be retrieved as stored")


def decode(header: Dataset, layout: Frames, frame: bytes) -> npt.NDArray[Any]:
    """One frame's stored bytes as pydicom's pixel array (rows x columns, or x samples: RGB for colour)."""
    check_codestream(header, layout, frame)
    ds = Dataset()
    ds.update(header)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths", "NumberOfFrames"):
        if keyword in ds:
            del ds[keyword]
    ds.file_meta = FileMetaDataset()
    if layout.transfer_syntax in NATIVE:
        ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_LITTLE)
        ds.PixelData = frame
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    else:
        ds.file_meta.TransferSyntaxUID = UID(layout.transfer_syntax)
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ds.pixel_array
        except Exception as e:  # the decoders raise many kinds
            raise PixelDecodeError(
                f"the installed decoders could not decode this frame ({e}): its bytes are damaged, or use a "
                f"variant of transfer syntax {layout.transfer_syntax} they do not support (12-bit JPEG needs "
                "the pylibjpeg-libjpeg plugin); retrieve the frame as stored instead") from e


def voi(values: npt.NDArray[np.float64], window: Window) -> npt.NDArray[np.uint8]:
    """``values`` (modality LUT output) through a VOI window to 0..255 (PS3.3 C.11.2.1.2.1 and 2)."""
    c, w = window.center, window.width
    if window.function == "linear":
        y = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255 if w > 1 else np.where(values > c - 0.5, 255.0, 0.0)
        y = np.where(values <= c - 0.5 - (w - 1) / 2, 0.0, np.where(values > c - 0.5 + (w - 1) / 2, 255.0, y))
    elif window.function == "linear-exact":
        y = ((values - c) / w + 0.5) * 255
    else:  # sigmoid
        y = 255 / (1 + np.exp(-4 * (values - c) / w))
    out: npt.NDArray[np.uint8] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return out


def file_window(header: Dataset) -> Window | None:
    """The first WindowCenter / WindowWidth of the header with its VOILUTFunction, if it has them."""
    center, width = header.get("WindowCenter"), header.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    try:
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(header.get("VOILUTFunction", "LINEAR") or "LINEAR").lower().replace("_", "-")
    if function not in _FUNCTIONS:
        function = "linear"
    if (w < 1 if function == "linear" else w <= 0) or not (math.isfinite(c) and math.isfinite(w)):
        return None
    return Window(c, w, function)


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def grayscale(header: Dataset, pixels: npt.NDArray[Any], window: Window | None) -> npt.NDArray[np.uint8]:
    """A monochrome frame through the Modality LUT, the VOI window (asked, the file's, or min to max) and
    MONOCHROME1 inversion, as 8-bit grey levels (0 black)."""
    values = np.asarray(apply_modality_lut(pixels, header), dtype=np.float64)
    chosen = window or file_window(header)
    if chosen is None:
        low, high = float(values.min()), float(values.max())
        if high > low:
            chosen = Window((low + high) / 2, high - low, "linear-exact")
    out = voi(values, chosen) if chosen is not None else np.zeros(values.shape, dtype=np.uint8)
    if str(header.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 255 - out
    return out


def colour(header: Dataset, pixels: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A colour frame (RGB, or YBR already converted by pydicom, or PALETTE COLOR) as 8-bit RGB."""
    if str(header.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, header)
        bits = 16 if rgb.dtype.itemsize > 1 else 8
    else:
        rgb = pixels
        bits = int(header.get("BitsStored", 8) or 8)
    if bits > 8:
        rgb = np.right_shift(rgb.astype(np.uint32), bits - 8)
    out: npt.NDArray[np.uint8] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def render(header: Dataset, layout: Frames, frame: bytes, asked: Rendering) -> bytes:
    """The frame (its stored bytes) rendered as ``asked``: JPEG or PNG bytes."""
    pixels = decode(header, layout, frame)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if samples == 1 and photometric != "PALETTE COLOR":
        image = Image.fromarray(grayscale(header, pixels, asked.window), mode="L")
    elif samples == 3 or photometric == "PALETTE COLOR":
        image = Image.fromarray(colour(header, pixels), mode="RGB")
    else:
        raise InvalidInputError(f"images of {samples} samples per pixel ({photometric}) are not rendered")
    if asked.viewport is not None:
        image = _fit(image, asked.viewport)
    out = io.BytesIO()
    if asked.media_type == JPEG:
        image.save(out, format="JPEG", quality=asked.quality)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def _fit(image: Image.Image, viewport: Viewport) -> Image.Image:
    """The viewport's source region of ``image``, scaled to fit viewport width x height keeping its
    aspect ratio."""
    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        sw = image.width - sx if sw < 0 else sw
        sh = image.height - sy if sh < 0 else sh
        if sx >= image.width or sy >= image.height or sw <= 0 or sh <= 0:
            raise InvalidInputError(f"the viewport's source region {viewport.region} is outside the "
                                    f"{image.width}x{image.height} image")
        image = image.crop((sx, sy, min(sx + sw, image.width), min(sy + sh, image.height)))
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)
