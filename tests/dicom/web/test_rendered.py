"""WADO-RS rendered: real files stored, rendered frames fetched through dicomweb-client and httpx, decoded
with Pillow and compared with a reference computed here from pydicom's pixel_array and PS3.3's VOI
formulas (PNG is lossless, so equality is exact)."""

from __future__ import annotations

import io
import warnings

import httpx
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

from tests.dicom.web.conftest import Server, data_file, store_file


def _client_and_uids(server: Server, ds: Dataset) -> tuple[DICOMwebClient, str, str, str]:
    return DICOMwebClient(url=server.url), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _image(data: bytes, fmt: str) -> npt.NDArray[np.uint8]:
    image = Image.open(io.BytesIO(data))
    assert image.format == fmt
    return np.asarray(image)


def _linear(x: npt.NDArray[np.float64], c: float, w: float) -> npt.NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2.1 to 0..255, written out as the standard states it, then rounded."""
    out = np.empty_like(x)
    low, high = x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2
    mid = ~(low | high)
    out[low], out[high] = 0, 255
    out[mid] = ((x[mid] - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


def _hounsfield(ds: Dataset) -> npt.NDArray[np.float64]:
    values: npt.NDArray[np.float64] = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return values


def test_ct_png_with_a_window_equals_numpy_windowing(server: Server) -> None:
    ds, _ = store_file(server, data_file("CT_small.dcm"))
    client, study, series, sop = _client_and_uids(server, ds)
    png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",),
                                            params={"window": "40,400,linear"})
    got = _image(png, "PNG")
    expected = _linear(_hounsfield(ds), 40, 400)
    assert got.shape == (128, 128)
    assert np.array_equal(got, expected)
    hu = _hounsfield(ds)
    assert (got[hu <= 40 - 0.5 - 399 / 2] == 0).all() and (got[hu > 40 - 0.5 + 399 / 2] == 255).all()
    assert 0 < np.count_nonzero(got == 0) < got.size  # the window really cuts: some black, not all


@pytest.mark.parametrize("function", ["linear-exact", "sigmoid"])
def test_other_window_functions(server: Server, function: str) -> None:
    ds, url = store_file(server, data_file("CT_small.dcm"))
    r = httpx.get(f"{url}/rendered", params={"window": f"100,600,{function}"},
                  headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    hu = _hounsfield(ds)
    if function == "linear-exact":  # PS3.3 C.11.2.1.3.2
        y = ((hu - 100) / 600 + 0.5) * 255
    else:  # PS3.3 C.11.2.1.3.1
        y = 255 / (1 + np.exp(-4 * (hu - 100) / 600))
    assert np.array_equal(_image(r.content, "PNG"), np.clip(np.rint(y), 0, 255).astype(np.uint8))


def test_without_a_window_the_files_first_window_is_used(server: Server) -> None:
    ds, url = store_file(server, data_file("MR_small.dcm"))  # WindowCenter 600, WindowWidth 1600
    r = httpx.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(_image(r.content, "PNG"), _linear(ds.pixel_array.astype(np.float64), 600, 1600))


def test_without_any_window_min_to_max(server: Server) -> None:
    ds, url = store_file(server, data_file("CT_small.dcm"))  # no WindowCenter/Width
    got = _image(httpx.get(f"{url}/rendered", headers={"Accept": "image/png"}).content, "PNG")
    hu = _hounsfield(ds)
    expected = np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    assert got[hu == hu.min()].max() == 0 and got[hu == hu.max()].min() == 255


def test_monochrome1_is_inverted(server: Server) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(data_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    stored, url = store_file(server, ("mono1.dcm", out.getvalue()))
    got = _image(httpx.get(f"{url}/rendered", headers={"Accept": "image/png"}).content, "PNG")
    assert np.array_equal(got, 255 - _linear(stored.pixel_array.astype(np.float64), 600, 1600))


def test_rle_renders_as_its_native_twin(server: Server) -> None:
    _, native = store_file(server, data_file("MR_small.dcm"))
    _, rle = store_file(server, data_file("MR_small_RLE.dcm"))
    a = httpx.get(f"{native}/rendered", headers={"Accept": "image/png"})
    b = httpx.get(f"{rle}/rendered", headers={"Accept": "image/png"})
    assert np.array_equal(_image(a.content, "PNG"), _image(b.content, "PNG"))


def test_rgb_is_served_as_stored(server: Server) -> None:
    ds, url = store_file(server, data_file("examples_rgb_color.dcm"))
    got = _image(httpx.get(f"{url}/rendered", headers={"Accept": "image/png"}).content, "PNG")
    assert np.array_equal(got, ds.pixel_array)


def test_palette_colour_goes_through_its_lookup_tables(server: Server) -> None:
    ds, url = store_file(server, data_file("examples_palette.dcm"))
    got = _image(httpx.get(f"{url}/rendered", headers={"Accept": "image/png"}).content, "PNG")
    rgb = apply_color_lut(ds.pixel_array, ds)
    expected = (rgb >> 8).astype(np.uint8) if rgb.dtype.itemsize > 1 else rgb
    assert got.shape == (350, 800, 3)
    assert np.array_equal(got, expected)


def test_a_frame_of_jpeg_ybr_multiframe_through_dicomweb_client(server: Server) -> None:
    ds, _ = store_file(server, data_file("examples_ybr_color.dcm"))  # 30 JPEG baseline YBR frames
    client, study, series, sop = _client_and_uids(server, ds)
    png = client.retrieve_instance_frames_rendered(study, series, sop, frame_numbers=[5],
                                                   media_types=("image/png",))
    assert np.array_equal(_image(png, "PNG"), ds.pixel_array[4])  # pydicom converts YBR to RGB
    jpeg = client.retrieve_instance_frames_rendered(study, series, sop, frame_numbers=[30])
    assert _image(jpeg, "JPEG").shape == (240, 320, 3)


def test_instance_rendered_is_its_first_frame(server: Server) -> None:
    ds, url = store_file(server, data_file("emri_small.dcm"))
    whole = httpx.get(f"{url}/rendered", headers={"Accept": "image/png"})
    first = httpx.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"})
    other = httpx.get(f"{url}/frames/7/rendered", headers={"Accept": "image/png"})
    assert whole.content == first.content != other.content
    frame = ds.pixel_array[6].astype(np.float64)  # no window in the file: the frame's own min to max
    expected = np.rint((frame - frame.min()) / (frame.max() - frame.min()) * 255).astype(np.uint8)
    assert np.array_equal(_image(other.content, "PNG"), expected)


def test_jpeg_is_the_default_and_quality_counts(server: Server) -> None:
    ds, _ = store_file(server, data_file("CT_small.dcm"))
    client, study, series, sop = _client_and_uids(server, ds)
    default = client.retrieve_instance_rendered(study, series, sop)
    assert default[:2] == b"\xff\xd8"
    low = client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",),
                                            params={"quality": 5, "window": "40,400,linear"})
    high = client.retrieve_instance_rendered(study, series, sop, media_types=("image/jpeg",),
                                             params={"quality": 100, "window": "40,400,linear"})
    assert len(low) < len(high)
    reference = _linear(_hounsfield(ds), 40, 400).astype(np.int16)
    assert np.abs(_image(high, "JPEG").astype(np.int16) - reference).max() <= 8  # lossy, but close


def test_viewport_crops_and_scales_keeping_the_aspect_ratio(server: Server) -> None:
    _, url = store_file(server, data_file("CT_small.dcm"))  # 128x128
    for viewport, size in [("64,64", (64, 64)), ("256,100", (100, 100)), ("100,50,0,0,64,32", (100, 50)),
                           ("40,40,64,64,,", (40, 40))]:
        r = httpx.get(f"{url}/rendered", params={"viewport": viewport}, headers={"Accept": "image/png"})
        assert r.status_code == 200, (viewport, r.text)
        assert Image.open(io.BytesIO(r.content)).size == size, viewport


def test_viewport_region_is_the_asked_crop(server: Server) -> None:
    ds, url = store_file(server, data_file("CT_small.dcm"))
    r = httpx.get(f"{url}/rendered", params={"viewport": "32,16,10,20,32,16", "window": "40,400,linear"},
                  headers={"Accept": "image/png"})
    assert np.array_equal(_image(r.content, "PNG"), _linear(_hounsfield(ds), 40, 400)[20:36, 10:42])


def test_unservable_accept_is_406(server: Server) -> None:
    _, url = store_file(server, data_file("CT_small.dcm"))
    for accept in ["image/gif", "application/dicom", "image/jpeg; q=0", "text/html"]:
        r = httpx.get(f"{url}/rendered", headers={"Accept": accept})
        assert r.status_code == 406, (accept, r.text)


def test_accept_query_parameter_overrides_the_header(server: Server) -> None:
    _, url = store_file(server, data_file("CT_small.dcm"))
    r = httpx.get(f"{url}/rendered", params={"accept": "image/png"}, headers={"Accept": "image/jpeg"})
    assert r.headers["content-type"] == "image/png"


def test_pixel_data_without_an_installed_decoder_is_406(server: Server) -> None:
    _, url = store_file(server, data_file("MR_small_jpeg_ls_lossless.dcm"))
    r = httpx.get(f"{url}/rendered")
    assert r.status_code == 406
    assert "cannot be decoded" in r.json()["error"]


def test_bad_requests_are_400(server: Server) -> None:
    _, url = store_file(server, data_file("emri_small.dcm"))  # 10 frames of 64x64
    for path, params in [
        ("frames/11/rendered", {}), ("frames/0/rendered", {}), ("frames/1,2/rendered", {}),
        ("rendered", {"window": "a,b,linear"}), ("rendered", {"window": "40,0,linear"}),
        ("rendered", {"window": "40,400,cubic"}), ("rendered", {"window": "40"}),
        ("rendered", {"window": "40,0.5,linear"}), ("rendered", {"window": "40,nan,sigmoid"}),
        ("rendered", {"quality": "0"}), ("rendered", {"quality": "high"}), ("rendered", {"viewport": "0,10"}),
        ("rendered", {"viewport": "10,10,0,0,-5,5"}), ("rendered", {"viewport": "10,10,500,0,5,5"}),
    ]:
        r = httpx.get(f"{url}/{path}", params=params)
        assert r.status_code == 400, (path, params, r.text)
        assert r.json()["status"] == 400


def test_packed_and_big_endian_pixel_data_is_400(server: Server) -> None:
    for name in ["liver_1frame.dcm", "MR_small_bigendian.dcm"]:
        _, url = store_file(server, data_file(name))
        r = httpx.get(f"{url}/rendered")
        assert r.status_code == 400, (name, r.text)
        assert "not served" in r.json()["error"]


def test_instance_without_pixel_data_is_400(server: Server) -> None:
    for name in ["test-SR.dcm", "rtplan.dcm"]:
        _, url = store_file(server, data_file(name))
        r = httpx.get(f"{url}/rendered")
        assert r.status_code == 400, name
        assert "pixel data" in r.json()["error"]


def test_unknown_instance_is_404(server: Server) -> None:
    ds, _ = store_file(server, data_file("CT_small.dcm"))
    r = httpx.get(f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  "/instances/1.2.3.4/rendered")
    assert r.status_code == 404
