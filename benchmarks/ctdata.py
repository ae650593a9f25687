"""Deterministic synthetic payloads for the benchmarks: CT-like slices and small records.

This module owns the data the benchmarks feed to the archive and to the raw-limit
measurements. `ct_slices` yields 512x512 16-bit little-endian slices (exactly 524,288 bytes
each) of a chest/abdomen-like phantom stored the way CT scanners store pixels (HU + 1024
as uint16: air ~24, lung ~200, fat ~930, soft tissue ~1050-1085, bone ~1250-1950, 0 outside
the reconstruction circle) plus per-slice Gaussian noise (sigma 18), so that the bytes
compress like real CT: zstd-3 about 2.45x, byte-shuffle + zstd-3 about 2.9x, slice by
slice. The anatomy drifts smoothly along z and every slice has its own noise, so no two
slices are identical and no slice shares long byte runs with another one; generation takes
about 1.5 ms per slice. `small_objects` yields distinct text-like metadata records
(`Keyword=value` lines with words, numbers and DICOM-style UIDs) that compress about 2.3x
one at a time with zstd-3. Every object depends only on (seed, index): a shorter run is a
prefix of a longer one, and `start` continues a sequence with fresh objects.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

CT_SLICE_SIDE: Final = 512
CT_SLICE_PIXELS: Final = CT_SLICE_SIDE * CT_SLICE_SIDE
CT_SLICE_BYTES: Final = CT_SLICE_PIXELS * 2
CT_NOISE_SIGMA: Final = 18.0
"""Standard deviation of the per-pixel noise, in stored units (= HU)."""

_KEYFRAME_SHIFT: Final = 3
_KEYFRAME_STEP: Final = 1 << _KEYFRAME_SHIFT
"""The phantom is rasterised every this many slices and blended linearly in between."""

_FOV_RADIUS: Final = 250.0
_CENTER: Final = (CT_SLICE_SIDE - 1) / 2.0

# Stored values (HU + 1024), as a CT scanner with rescale intercept -1024 writes them.
_AIR: Final = 24.0
_LUNG: Final = 200.0
_FAT: Final = 930.0
_SOFT_TISSUE: Final = 1050.0
_MUSCLE: Final = 1068.0
_BLOOD: Final = 1080.0
_LIVER: Final = 1085.0
_TRABECULAR_BONE: Final = 1250.0
_CORTICAL_BONE: Final = 1950.0
_TABLE: Final = 780.0

_LITTLE_ENDIAN: Final = sys.byteorder == "little"

_SMALL_OBJECT_CHUNK: Final = 128
"""Records are generated this many at a time from one random stream."""

FloatImage = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Ellipse:
    """One filled ellipse of the phantom, in pixel coordinates, painted over what is below."""

    cx: float
    cy: float
    ax: float
    ay: float
    value: float
    angle: float = 0.0


@dataclass(frozen=True)
class _Patient:
    """Seed-dependent anatomy constants: body size, where the slow z-cycles start."""

    body_ax: float
    body_ay: float
    body_dx: float
    phases: tuple[float, ...]
    rib_angles: tuple[float, ...]
    rib_phases: tuple[float, ...]
    vessel_offsets: tuple[tuple[float, float], ...]


def _make_patient(seed: int) -> _Patient:
    rng = np.random.default_rng([seed, 0x5EED, 1])
    rib_count = int(rng.integers(9, 13))
    return _Patient(
        body_ax=float(rng.uniform(175.0, 200.0)),
        body_ay=float(rng.uniform(125.0, 145.0)),
        body_dx=float(rng.uniform(-6.0, 6.0)),
        phases=tuple(float(p) for p in rng.uniform(0.0, 2.0 * math.pi, size=8)),
        rib_angles=tuple(
            float(a)
            for a in np.sort(rng.uniform(0.15 * math.pi, 0.85 * math.pi, size=rib_count))
        ),
        rib_phases=tuple(float(p) for p in rng.uniform(0.0, 2.0 * math.pi, size=rib_count)),
        vessel_offsets=tuple(
            (float(x), float(y)) for x, y in rng.uniform(-0.7, 0.7, size=(12, 2))
        ),
    )


def _cycle(z: float, period: float, phase: float) -> float:
    """A smooth value in [0, 1] that goes up and down along z."""
    return 0.5 + 0.5 * math.sin(2.0 * math.pi * z / period + phase)


def _anatomy(patient: _Patient, z: float) -> list[_Ellipse]:
    """The ellipses of the phantom at slice position z, back to front."""
    p = patient.phases
    cx = _CENTER + patient.body_dx
    cy = _CENTER + 10.0
    body_scale = 0.94 + 0.06 * _cycle(z, 310.0, p[0])
    ax = patient.body_ax * body_scale
    ay = patient.body_ay * body_scale
    lung = _cycle(z, 420.0, p[1])  # 1: thorax with big lungs, 0: abdomen
    shapes = [
        # Patient table: a curved carbon-fibre plate under the patient.
        _Ellipse(_CENTER, cy + ay + 40.0, 215.0, 30.0, _TABLE),
        _Ellipse(_CENTER, cy + ay + 46.0, 205.0, 26.0, _AIR),
        # Body: subcutaneous fat around soft tissue and a muscle wall.
        _Ellipse(cx, cy, ax, ay, _FAT),
        _Ellipse(cx, cy, ax - 14.0, ay - 12.0, _MUSCLE),
        _Ellipse(cx, cy, ax - 26.0, ay - 22.0, _SOFT_TISSUE),
    ]
    # Liver and kidneys sit below the diaphragm: the lungs, painted over them, shrink as z
    # moves from the thorax to the abdomen and uncover them.
    abdomen = 1.0 - lung
    shapes.append(_Ellipse(cx - 0.36 * ax, cy + 0.02 * ay, 0.40 * ax, 0.62 * ay, _LIVER, 0.3))
    shapes.append(_Ellipse(cx + 0.35 * ax, cy - 0.10 * ay, 0.22 * ax, 0.30 * ay, _AIR + 10.0))
    if abdomen > 0.5:
        kidney = 0.5 + abdomen
        for side in (-1.0, 1.0):
            shapes.append(
                _Ellipse(cx + side * 0.30 * ax, cy + 0.45 * ay, 0.10 * ax * kidney, 0.16 * ay,
                         _MUSCLE + 20.0, side * 0.5)
            )
    lung_ax = (0.12 + 0.24 * lung) * ax
    lung_ay = (0.25 + 0.45 * lung) * ay
    if lung > 0.12:
        for side in (-1.0, 1.0):
            lx = cx + side * 0.42 * ax
            ly = cy - 0.05 * ay - (1.0 - lung) * 0.2 * ay
            shapes.append(_Ellipse(lx, ly, lung_ax, lung_ay, _LUNG, side * 0.15))
            for vx, vy in patient.vessel_offsets[:6] if side < 0 else patient.vessel_offsets[6:]:
                r = 2.0 + 2.5 * _cycle(z, 37.0, vx * 10.0)
                shapes.append(
                    _Ellipse(lx + vx * lung_ax, ly + vy * lung_ay, r, r, _BLOOD - 60.0)
                )
    # Heart and aorta in front of the spine.
    heart = 0.20 + 0.10 * _cycle(z, 150.0, p[2])
    shapes.append(_Ellipse(cx + 0.10 * ax, cy - 0.05 * ay, heart * ax, 1.3 * heart * ay, _BLOOD))
    shapes.append(_Ellipse(cx + 0.02 * ax, cy + 0.38 * ay, 12.0, 12.0, _BLOOD))
    # Vertebra: cortical shell, trabecular body, spinal canal, spinous process.
    vy = cy + 0.62 * ay
    vr = 24.0 + 3.0 * _cycle(z, 60.0, p[3])
    shapes.append(_Ellipse(cx, vy, vr, 0.85 * vr, _CORTICAL_BONE))
    shapes.append(_Ellipse(cx, vy, vr - 4.0, 0.85 * vr - 4.0, _TRABECULAR_BONE))
    shapes.append(_Ellipse(cx, vy + vr + 9.0, 9.0, 9.0, _CORTICAL_BONE))
    shapes.append(_Ellipse(cx, vy + vr + 9.0, 6.0, 6.0, _SOFT_TISSUE))
    shapes.append(_Ellipse(cx, vy + vr + 26.0, 5.0, 12.0, _CORTICAL_BONE))
    # Ribs: short bone segments just inside the muscle wall that come and go along z.
    for angle, phase in zip(patient.rib_angles, patient.rib_phases, strict=True):
        presence = _cycle(z, 44.0, phase)
        if presence < 0.45:
            continue
        # `angle` runs from the front midline (0) around one side to the spine (pi).
        theta = angle + 0.05 * math.sin(z / 90.0)
        for side in (-1.0, 1.0):
            rx = cx + side * (ax - 21.0) * math.sin(theta)
            ry = cy - (ay - 19.0) * math.cos(theta)
            shapes.append(
                _Ellipse(rx, ry, 9.0 * presence, 4.5, _CORTICAL_BONE - 150.0, side * theta)
            )
    return shapes


class _Canvas:
    """Pixel-coordinate grids reused to rasterise every keyframe."""

    def __init__(self) -> None:
        axis = np.arange(CT_SLICE_SIDE, dtype=np.float32)
        self.x: FloatImage = axis[np.newaxis, :]
        self.y: FloatImage = axis[:, np.newaxis]
        r2 = (self.x - _CENTER) ** 2 + (self.y - _CENTER) ** 2
        self.outside_fov: npt.NDArray[np.bool_] = r2 > _FOV_RADIUS**2

    def rasterise(self, shapes: list[_Ellipse]) -> FloatImage:
        image = np.full((CT_SLICE_SIDE, CT_SLICE_SIDE), _AIR, dtype=np.float32)
        for e in shapes:
            reach = max(e.ax, e.ay) + 1.0
            r0 = max(0, int(e.cy - reach))
            r1 = min(CT_SLICE_SIDE, int(e.cy + reach) + 2)
            c0 = max(0, int(e.cx - reach))
            c1 = min(CT_SLICE_SIDE, int(e.cx + reach) + 2)
            if r0 >= r1 or c0 >= c1 or e.ax <= 0.0 or e.ay <= 0.0:
                continue
            dx = self.x[:, c0:c1] - e.cx
            dy = self.y[r0:r1, :] - e.cy
            cos_a, sin_a = math.cos(e.angle), math.sin(e.angle)
            u = (dx * cos_a + dy * sin_a) / e.ax
            v = (dy * cos_a - dx * sin_a) / e.ay
            inside = u * u + v * v <= 1.0
            image[r0:r1, c0:c1][inside] = e.value
        return image


def _gaussian_noise_table(sigma: float) -> npt.NDArray[np.int16]:
    """65,536 rounded Gaussian quantiles: indexing with uniform uint16 draws gives noise."""
    unit = NormalDist()
    quantiles = [unit.inv_cdf((i + 0.5) / 65536.0) for i in range(65536)]
    return np.rint(np.asarray(quantiles) * sigma).astype(np.int16)


def ct_slices(n: int, seed: int = 0, *, start: int = 0) -> Iterator[bytes]:
    """Yield `n` CT-like slices (512x512 little-endian uint16, 524,288 bytes each).

    Slice `start + i` depends only on `seed` and its index. Distinct seeds give distinct
    patients; consecutive slices of one seed show a smoothly changing anatomy.
    """
    if n < 0 or start < 0:
        raise ValueError("n and start must be non-negative")
    if n == 0:
        return
    patient = _make_patient(seed)
    canvas = _Canvas()
    noise_table = _gaussian_noise_table(CT_NOISE_SIGMA)
    inside_fov = (~canvas.outside_fov).astype(np.int16)
    keyframes: dict[int, npt.NDArray[np.int16]] = {}

    def keyframe(k: int) -> npt.NDArray[np.int16]:
        if k not in keyframes:
            if len(keyframes) >= 2:
                keyframes.pop(min(keyframes))
            image = canvas.rasterise(_anatomy(patient, float(k * _KEYFRAME_STEP)))
            keyframes[k] = np.rint(image).astype(np.int16)
        return keyframes[k]

    step_to_next: tuple[int, npt.NDArray[np.int16]] | None = None
    pixels = np.empty((CT_SLICE_SIDE, CT_SLICE_SIDE), dtype=np.int16)
    noise = np.empty((CT_SLICE_SIDE, CT_SLICE_SIDE), dtype=np.int16)
    for index in range(start, start + n):
        k, offset = divmod(index, _KEYFRAME_STEP)
        lower = keyframe(k)
        if offset == 0:
            np.copyto(pixels, lower)
        else:
            if step_to_next is None or step_to_next[0] != k:
                step_to_next = (k, keyframe(k + 1) - lower)
            # lower + (upper - lower) * offset / step, in integers (step is a power of two).
            np.multiply(step_to_next[1], offset, out=pixels)
            pixels >>= _KEYFRAME_SHIFT
            pixels += lower
        # Raw 64-bit outputs read as four uniform uint16 each: twice as fast as integers().
        raw = np.random.PCG64([seed, 0xC7, index]).random_raw(CT_SLICE_PIXELS // 4)
        draws = np.asarray(raw, dtype="<u8").view("<u2").reshape(pixels.shape)
        np.take(noise_table, draws, out=noise)
        pixels += noise
        np.maximum(pixels, 0, out=pixels)
        pixels *= inside_fov
        # Values are in [0, 32767]: int16 and uint16 share their bytes.
        yield pixels.tobytes() if _LITTLE_ENDIAN else pixels.astype("<u2").tobytes()


# --- small records -------------------------------------------------------------------------

_SYLLABLES: Final = (
    "ab", "ac", "ad", "al", "am", "an", "ar", "as", "at", "ba", "be", "bi", "bo", "ca", "ce", "ci",
    "co", "da", "de", "di", "do", "el", "em", "en", "er", "es", "et", "fa", "fe", "fi", "ga", "ge",
    "gi", "go", "ha", "he", "hi", "in", "io", "is", "it", "ka", "ke", "la", "le", "li", "lo", "lu",
    "ma", "me", "mi", "mo", "mu", "na", "ne", "ni", "no", "nu", "ol", "om", "on", "or", "os", "pa",
    "pe", "pi", "po", "ra", "re", "ri", "ro", "ru", "sa", "se", "si", "so", "st", "ta", "te", "ti",
    "to", "tu", "ur", "us", "va", "ve", "vi", "vo",
)

_KEYWORDS: Final = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "StudyDate", "StudyTime", "SeriesNumber",
    "InstanceNumber", "Modality", "Manufacturer", "InstitutionName", "ReferringPhysicianName",
    "StudyDescription", "SeriesDescription", "BodyPartExamined", "SliceThickness", "KVP",
    "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleIntercept",
    "RescaleSlope", "WindowCenter", "WindowWidth", "ConvolutionKernel", "AcquisitionNumber",
    "FrameOfReferenceUID", "ContentDate", "ContentTime", "AccessionNumber", "ProtocolName",
    "Exposure", "XRayTubeCurrent", "ReconstructionDiameter", "Comment",
)

_CODED_VALUES: Final = (
    "CT", "MR", "CR", "DX", "US", "PT", "AXIAL", "ORIGINAL", "PRIMARY", "DERIVED", "SECONDARY",
    "CHEST", "ABDOMEN", "HEAD", "PELVIS", "STANDARD", "LUNG", "BONE", "SOFT", "HFS", "FFS", "M",
    "F", "O", "YES", "NO",
)

_DIGIT_PLACEHOLDER: Final = 0x01
"""Byte standing for 'a random decimal digit' in the record vocabulary."""

_WORD_SHARE: Final = 0.50
_NUMBER_SHARE: Final = 0.36
_UID_SHARE: Final = 0.14


@dataclass(frozen=True)
class _RecordVocabulary:
    """Tokens of the records, flat: `keys` are key ids, `values` value ids with weights."""

    flat: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    key_count: int
    value_weights: npt.NDArray[np.float64]
    mean_pair_length: float


def _record_vocabulary() -> _RecordVocabulary:
    """The key=value vocabulary shared by every record (independent of the seed)."""
    rng = np.random.default_rng(0x70CE)
    keys = [f"{k}=" for k in _KEYWORDS]
    words = list(_CODED_VALUES)
    while len(words) < 3000:
        count = int(rng.integers(1, 4))
        word = "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), count))
        words.append(word.upper() if count == 1 else word.capitalize())
    phrases = [
        " ".join(words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(1, 4))))
        for _ in range(len(words))
    ]
    hole = chr(_DIGIT_PLACEHOLDER)
    numbers = [hole * d for d in range(1, 11)] + [
        f"{'-' if s else ''}{hole * i}.{hole * f}" for i in range(1, 4) for f in range(1, 7)
        for s in (0, 1)
    ]
    uids = [
        f"1.2.840.{hole * a}.{hole * b}.{hole * c}.{hole * d}"
        for a, b, c, d in rng.integers(1, 12, size=(40, 4))
    ]
    values = [v + "\n" for v in phrases + numbers + uids]
    word_rank = np.arange(1, len(phrases) + 1, dtype=np.float64)
    word_weights = 1.0 / word_rank
    weights = np.concatenate(
        (
            word_weights / word_weights.sum() * _WORD_SHARE,
            np.full(len(numbers), _NUMBER_SHARE / len(numbers)),
            np.full(len(uids), _UID_SHARE / len(uids)),
        )
    )
    encoded = [t.encode("ascii") for t in keys + values]
    lengths = np.array([len(t) for t in encoded], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    mean_key = float(lengths[: len(keys)].mean())
    mean_value = float((lengths[len(keys) :] * weights).sum())
    return _RecordVocabulary(
        flat=np.frombuffer(b"".join(encoded), dtype=np.uint8),
        offsets=offsets,
        lengths=lengths,
        key_count=len(keys),
        value_weights=weights,
        mean_pair_length=mean_key + mean_value,
    )


def _record_text(vocabulary: _RecordVocabulary, rng: np.random.Generator, need: int
                 ) -> npt.NDArray[np.uint8]:
    """At least `need` bytes of random key=value lines with their digits filled in."""
    pairs = int(need / vocabulary.mean_pair_length * 1.15) + 16
    ids = np.empty(2 * pairs, dtype=np.int64)
    ids[0::2] = rng.integers(0, vocabulary.key_count, size=pairs)
    ids[1::2] = vocabulary.key_count + rng.choice(
        vocabulary.value_weights.size, size=pairs, p=vocabulary.value_weights
    )
    # Concatenate the variable-length tokens with one gather.
    token_lengths = vocabulary.lengths[ids]
    ends = np.cumsum(token_lengths)
    source = np.repeat(vocabulary.offsets[ids] - (ends - token_lengths), token_lengths)
    source += np.arange(int(ends[-1]), dtype=np.int64)
    text: npt.NDArray[np.uint8] = vocabulary.flat[source]
    holes = text == _DIGIT_PLACEHOLDER
    text[holes] = rng.integers(ord("0"), ord("9") + 1, size=int(holes.sum()), dtype=np.uint8)
    if text.size < need:  # vanishingly rare: top up
        text = np.concatenate((text, _record_text(vocabulary, rng, need - text.size)))
    return text


def small_objects(n: int, size: int = 4096, seed: int = 0, *, start: int = 0) -> Iterator[bytes]:
    """Yield `n` distinct text-like records of exactly `size` bytes (~2.3x with zstd-3).

    A record is a header line naming its seed and index (so records are distinct) followed
    by DICOM-header-like `Keyword=value` lines: coded values, Zipf-distributed words,
    decimal numbers and UIDs with random digits. Record `start + i` depends only on `seed`,
    `size` and its index.
    """
    if n < 0 or start < 0 or size < 1:
        raise ValueError("n and start must be non-negative and size positive")
    if n == 0:
        return
    vocabulary = _record_vocabulary()
    first_chunk = start // _SMALL_OBJECT_CHUNK
    last_chunk = (start + n - 1) // _SMALL_OBJECT_CHUNK
    for chunk in range(first_chunk, last_chunk + 1):
        rng = np.random.default_rng([seed, 0x5A11, size, chunk])
        need = _SMALL_OBJECT_CHUNK * size
        records = _record_text(vocabulary, rng, need)[:need].reshape(_SMALL_OBJECT_CHUNK, size)
        for row in range(_SMALL_OBJECT_CHUNK):
            index = chunk * _SMALL_OBJECT_CHUNK + row
            if index < start or index >= start + n:
                continue
            header = f"#{seed}:{index}\n".encode("ascii")[:size]
            records[row, : len(header)] = np.frombuffer(header, dtype=np.uint8)
            yield records[row].tobytes()
