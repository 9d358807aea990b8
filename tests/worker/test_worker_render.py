"""Every kind of TIFF the issue lists, converted and compared with what a viewer shows
(dimensions, orientation via the quadrants, colour per quadrant), computed
independently in worker_tiffmaker."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
import worker_tiffmaker as tm
from PIL import Image

TOL = 5  # JPEG q95 error on flat quadrants, measured away from the edges


def quadrant_means(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    m = 8
    boxes = [
        a[m : h // 2 - m, m : w // 2 - m],
        a[m : h // 2 - m, w // 2 + m : w - m],
        a[h // 2 + m : h - m, m : w // 2 - m],
        a[h // 2 + m : h - m, w // 2 + m : w - m],
    ]
    return np.array([b.reshape(-1, b.shape[-1] if b.ndim == 3 else 1).mean(axis=0) for b in boxes])


def assert_shows(out: np.ndarray, expected: np.ndarray, tol: float = TOL):
    assert out.shape == expected.shape, (out.shape, expected.shape)
    got, want = quadrant_means(out), quadrant_means(expected.astype(np.float64))
    assert np.abs(got - want).max() <= tol, (
        f"\ngot  {got.round(1).tolist()}\nwant {want.round(1).tolist()}"
    )


def write(tmp_path, name, data, **kw):
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, data, **kw)
    return path


def pil_write(tmp_path, name, image, **kw):
    path = tmp_path / f"{name}.tif"
    image.save(path, "TIFF", **kw)
    return path


RGB = tm.quadrant_rgb()
GREY = tm.quadrant_grey()


@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "packbits", "lzma"])
@pytest.mark.parametrize("layout", ["strips", "tiles", "planar-strips", "planar-tiles"])
def test_rgb8_compressions_and_layouts(tmp_path, convert, compression, layout):
    kw = {"compression": compression, "photometric": "rgb"}
    data = RGB
    if layout.startswith("planar"):
        data = np.moveaxis(RGB, -1, 0)
        kw["planarconfig"] = "separate"
    if layout.endswith("tiles"):
        kw["tile"] = (16, 16)
    out, report = convert(write(tmp_path, f"rgb-{compression}-{layout}", data, **kw))
    assert_shows(out, RGB)
    assert report.pages == 1


@pytest.mark.parametrize(
    "compression", ["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"]
)
def test_rgb8_written_by_pillow(tmp_path, convert, compression):
    out, _ = convert(
        pil_write(tmp_path, f"pil-{compression}", Image.fromarray(RGB), compression=compression)
    )
    assert_shows(out, RGB)


@pytest.mark.parametrize("compression", ["zstd", "webp", "jpeg2000"])
def test_codecs_beyond_pillow(tmp_path, convert, compression):
    out, _ = convert(write(tmp_path, f"codec-{compression}", RGB, photometric="rgb",
                           compression=compression))  # fmt: skip
    assert_shows(out, RGB, tol=8)


def test_jpeg_compressed_tiles_ycbcr(tmp_path, convert):
    path = write(tmp_path, "jpeg-tiles", RGB, compression="jpeg", photometric="rgb", tile=(32, 32))
    out, _ = convert(path)
    assert_shows(out, RGB)


def test_old_style_jpeg(tmp_path, convert):
    path = tmp_path / "ojpeg.tif"
    path.write_bytes(tm.old_style_jpeg_tiff(RGB))
    out, _ = convert(path)
    assert_shows(out, RGB)


@pytest.mark.parametrize("compression", ["raw", "group3", "group4", "packbits"])
def test_bilevel(tmp_path, convert, compression):
    bits = GREY > 128
    image = Image.fromarray(bits.astype(np.uint8) * 255).convert("1")
    out, _ = convert(pil_write(tmp_path, f"bilevel-{compression}", image, compression=compression))
    assert out.ndim == 2
    assert_shows(out, bits.astype(np.uint8) * 255)


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_grey(tmp_path, convert, bits):
    top = (1 << bits) - 1
    stored = np.round(GREY.astype(np.float64) * top / 255).astype(np.uint8)
    out, _ = convert(
        write(tmp_path, f"grey{bits}", stored, bitspersample=bits, photometric="minisblack")
    )
    assert_shows(out, np.round(stored * 255.0 / top))


def test_grey8_and_miniswhite(tmp_path, convert):
    out, _ = convert(write(tmp_path, "grey8", GREY, photometric="minisblack"))
    assert out.ndim == 2
    assert_shows(out, GREY)
    out, _ = convert(write(tmp_path, "white", GREY, photometric="miniswhite"))
    assert_shows(out, 255 - GREY)


@pytest.mark.parametrize("planar", [False, True])
def test_rgb16_is_scaled_not_clipped(tmp_path, convert, planar):
    stored = RGB.astype(np.uint16) * 257
    kw = {"photometric": "rgb"}
    if planar:
        stored, kw["planarconfig"] = np.moveaxis(stored, -1, 0), "separate"
    out, _ = convert(write(tmp_path, f"rgb16-{planar}", stored, **kw))
    assert_shows(out, RGB)


def test_grey16_is_scaled_not_clipped(tmp_path, convert):
    out, _ = convert(
        write(tmp_path, "grey16", GREY.astype(np.uint16) * 257, photometric="minisblack")
    )
    assert_shows(out, GREY)


@pytest.mark.parametrize("photometric", ["minisblack", "rgb"])
def test_12_bit_samples(tmp_path, convert, photometric):
    source = GREY if photometric == "minisblack" else RGB
    stored = np.round(source.astype(np.float64) * 4095 / 255).astype(np.uint16)
    out, _ = convert(
        write(tmp_path, f"twelve-{photometric}", stored, bitspersample=12, photometric=photometric)
    )
    assert_shows(out, source)


def test_32_bit_integer_is_stretched(tmp_path, convert):
    stored = GREY.astype(np.uint32) * 1000 + 5_000_000
    lo, hi = stored.min(), stored.max()
    out, _ = convert(write(tmp_path, "u32", stored, photometric="minisblack"))
    assert_shows(out, np.round((stored - lo) * 255.0 / (hi - lo)))


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_signed_samples_are_stretched(tmp_path, convert, dtype):
    info = np.iinfo(dtype)
    stored = (GREY.astype(np.int32) * (info.max - info.min) // 255 + info.min).astype(dtype)
    lo, hi = float(stored.min()), float(stored.max())
    out, _ = convert(write(tmp_path, f"signed-{dtype.__name__}", stored, photometric="minisblack"))
    assert_shows(out, np.round((stored - lo) * 255.0 / (hi - lo)))


def test_float_in_unit_range(tmp_path, convert):
    out, _ = convert(write(tmp_path, "f32", RGB.astype(np.float32) / 255, photometric="rgb"))
    assert_shows(out, RGB)


def test_float_outside_unit_range_is_stretched(tmp_path, convert):
    stored = GREY.astype(np.float64) * 10 - 300
    out, _ = convert(write(tmp_path, "f64", stored, photometric="minisblack"))
    assert_shows(out, np.round((stored - stored.min()) * 255.0 / (stored.max() - stored.min())))


def test_palette_8_bit(tmp_path, convert):
    image = Image.fromarray(RGB).quantize(colors=4)
    out, _ = convert(pil_write(tmp_path, "palette8", image))
    assert_shows(out, RGB, tol=8)


def test_palette_4_bit(tmp_path, convert):
    colours = np.array(tm.QUADRANTS + ((0, 0, 0),) * 252, np.uint16) * 257
    index = np.zeros(GREY.shape, np.uint8)
    for i, g in enumerate(tm.GREY_QUADRANTS):
        index[g == GREY] = i
    path = write(tmp_path, "palette4", index, photometric="palette", bitspersample=4,
                 colormap=np.ascontiguousarray(colours.T))  # fmt: skip
    out, _ = convert(path)
    assert_shows(out, RGB)


def test_cmyk_without_profile_uses_standard_profile(tmp_path, convert):
    cmyk = np.zeros((tm.H, tm.W, 4), np.uint8)
    h, w = tm.H // 2, tm.W // 2
    cmyk[:h, w:, 0] = 255  # cyan ink
    cmyk[h:, :w, 3] = 255  # black ink
    cmyk[h:, w:, :3] = 255  # C+M+Y
    out, report = convert(write(tmp_path, "cmyk", cmyk, photometric="separated"))
    q = quadrant_means(out)
    assert q[0].min() > 235, "no ink must show paper white"
    assert q[1][0] < 80 and q[1][2] > 120, "cyan ink must look cyan"
    assert q[2].max() < 70, "full black ink must look dark"
    assert q[3].max() < 110, "C+M+Y must look dark"
    assert any("CMYK" in n for n in report.notes)
    # a naive inversion would give pure (0, 255, 255) for cyan: the profile must not
    assert q[1][1] < 250


def test_cielab(tmp_path, convert):
    lab = np.zeros((tm.H, tm.W, 3), np.uint8)
    lab[..., 0] = 128  # L* = 50
    lab[tm.H // 2 :, :, 1] = 60  # a* = +60 (red) in the bottom half; int8 in the file
    out, _ = convert(write(tmp_path, "lab", lab, photometric="cielab"))
    q = quadrant_means(out)
    assert np.abs(q[0] - 119).max() < 6  # L*=50 neutral is sRGB grey 119
    assert q[2][0] > q[2][1] + 60  # a* > 0 is red


def test_embedded_icc_profile_is_honoured(tmp_path, convert):
    path = pil_write(
        tmp_path, "linear", Image.fromarray(RGB), tiffinfo={34675: tm.linear_rgb_icc()}
    )
    out, report = convert(path)
    assert_shows(out, tm.srgb_encode(RGB), tol=6)
    assert any("ICC" in n for n in report.notes)


def test_unassociated_alpha_is_flattened_on_white(tmp_path, convert):
    alpha = np.full(GREY.shape, 255, np.uint8)
    alpha[: tm.H // 2, tm.W // 2 :] = 0
    alpha[tm.H // 2 :, : tm.W // 2] = 128
    rgba = np.dstack([RGB, alpha])
    out, _ = convert(pil_write(tmp_path, "rgba", Image.fromarray(rgba, "RGBA")))
    a = alpha[..., None] / 255.0
    assert_shows(out, RGB * a + 255 * (1 - a))


def test_associated_alpha_16_bit_is_flattened_on_white(tmp_path, convert):
    alpha = np.full(GREY.shape, 65535, np.uint16)
    alpha[: tm.H // 2, tm.W // 2 :] = 0
    premultiplied = (RGB.astype(np.uint32) * 257 * alpha[..., None] // 65535).astype(np.uint16)
    data = np.dstack([premultiplied, alpha])
    out, _ = convert(write(tmp_path, "assoc", data, photometric="rgb", extrasamples=["assocalpha"]))
    a = alpha[..., None] / 65535.0
    assert_shows(out, RGB * a + 255 * (1 - a))


def test_grey_with_alpha(tmp_path, convert):
    alpha = np.full(GREY.shape, 255, np.uint8)
    alpha[: tm.H // 2, : tm.W // 2] = 0
    out, _ = convert(pil_write(tmp_path, "la", Image.fromarray(np.dstack([GREY, alpha]), "LA")))
    expected = GREY.copy()
    expected[alpha == 0] = 255
    assert_shows(out, expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied(tmp_path, convert, orientation):
    path = write(tmp_path, f"o{orientation}", RGB, photometric="rgb", compression="lzw",
                 extratags=[(274, "H", 1, orientation, True)])  # fmt: skip
    out, report = convert(path)
    assert_shows(out, tm.orient(RGB, orientation))


def test_orientation_on_the_tifffile_path(tmp_path, convert):
    stored = RGB.astype(np.float32) / 255
    path = write(tmp_path, "of6", stored, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    out, report = convert(path)
    assert report.decoder == "tifffile"
    assert_shows(out, tm.orient(RGB, 6))


def test_multi_page_takes_the_first_page(tmp_path, convert):
    pages = np.stack([RGB, 255 - RGB, RGB // 2])
    out, report = convert(write(tmp_path, "pages", pages, photometric="rgb"))
    assert report.pages == 3
    assert_shows(out, RGB)


def test_dpi_is_carried(tmp_path, convert):
    out, _ = convert(pil_write(tmp_path, "dpi", Image.fromarray(RGB), dpi=(300, 300)))
    path = next(tmp_path.glob("dpi.jpg"))
    with Image.open(path) as im:
        assert tuple(round(d) for d in im.info.get("dpi", (0, 0))) == (300, 300)


def test_grey_stays_grey_and_small(tmp_path, convert):
    out, report = convert(write(tmp_path, "g", GREY, photometric="minisblack"))
    assert out.ndim == 2 and report.mode == "L"


def test_pillow_fallback_encoder(tmp_path, convert, monkeypatch):
    import worker.encode as encode

    monkeypatch.setattr(encode, "_pyvips", False)
    out, report = convert(write(tmp_path, "fallback", RGB, photometric="rgb"))
    assert report.encoder.startswith("libjpeg-turbo")
    assert_shows(out, RGB)


def test_streaming_encoder_for_images_over_the_memory_budget(tmp_path, convert, monkeypatch):
    import worker.encode as encode

    monkeypatch.setattr(encode, "fits_multipass", lambda *args: False)
    out, report = convert(pil_write(tmp_path, "big", Image.fromarray(RGB), dpi=(300, 300)))
    assert "streaming" in report.encoder
    assert_shows(out, RGB)
    with Image.open(tmp_path / "big.jpg") as im:
        assert im.info.get("progressive") or im.info.get("progression")
        assert tuple(round(d) for d in im.info.get("dpi", (0, 0))) == (300, 300)


def test_memory_budget_decides_the_path():
    from worker.encode import fits_multipass

    mib = 1024 * 1024
    assert fits_multipass(6000, 4000, "RGB", 600 * mib)  # 24 MP: full mozjpeg
    assert not fits_multipass(12200, 8200, "RGB", 600 * mib)  # 100 MP: streaming
    assert fits_multipass(12200, 8200, "RGB", 1000 * mib)


def test_encoder_is_mozjpeg(tmp_path, convert):
    _, report = convert(write(tmp_path, "moz", RGB, photometric="rgb"))
    assert report.encoder.startswith("mozjpeg")


def test_output_is_untagged_srgb(tmp_path, convert):
    path = pil_write(
        tmp_path, "tagged", Image.fromarray(RGB), tiffinfo={34675: tm.linear_rgb_icc()}
    )
    convert(path)
    with Image.open(tmp_path / "tagged.jpg") as im:
        assert "icc_profile" not in im.info
        assert im.info.get("progressive") or im.info.get("progression")


def _unused(io_module=io):  # keep the import for readers of the fixtures
    return io_module


@pytest.mark.parametrize("layout", ["strips", "tiles"])
@pytest.mark.parametrize("photometric", ["rgb", "minisblack"])
def test_strip_by_strip_path_for_large_plain_scans(
    tmp_path, convert, monkeypatch, layout, photometric
):
    monkeypatch.setenv("WORKER_MEMORY_BUDGET_MB", "1")  # every image counts as large
    source = RGB if photometric == "rgb" else GREY
    kw = {"tile": (16, 16)} if layout == "tiles" else {"rowsperstrip": 5}
    path = write(tmp_path, f"plain-{layout}-{photometric}", source, photometric=photometric,
                 compression="lzw", resolution=(300, 300), resolutionunit="INCH", **kw)  # fmt: skip
    out, report = convert(path)
    assert report.decoder.startswith("tifffile (strip by strip)")
    assert "baseline" in report.encoder
    assert_shows(out, source)
    with Image.open(tmp_path / f"plain-{layout}-{photometric}.jpg") as im:
        assert tuple(round(d) for d in im.info.get("dpi", (0, 0))) == (300, 300)


def test_strip_by_strip_path_leaves_unusual_files_to_pillow(tmp_path, convert, monkeypatch):
    monkeypatch.setenv("WORKER_MEMORY_BUDGET_MB", "1")
    path = write(tmp_path, "oriented", RGB, photometric="rgb", extratags=[(274, "H", 1, 3, True)])
    out, report = convert(path)
    assert report.decoder == "pillow"
    assert_shows(out, tm.orient(RGB, 3))


def test_cmyk_with_embedded_profile_uses_it(tmp_path, convert):
    from worker.render import DEFAULT_CMYK_PROFILE

    cmyk = np.zeros((tm.H, tm.W, 4), np.uint8)
    cmyk[tm.H // 2 :, :, 3] = 255
    image = Image.fromarray(cmyk, "CMYK")
    path = pil_write(tmp_path, "cmyk-icc", image,
                     tiffinfo={34675: DEFAULT_CMYK_PROFILE.read_bytes()})  # fmt: skip
    out, report = convert(path)
    assert any("through 'Artifex" in n for n in report.notes), report.notes  # embedded, not default
    q = quadrant_means(out)
    assert q[0].min() > 235 and q[2].max() < 70


def test_memory_budget_follows_the_machine(monkeypatch):
    from worker.encode import fits_multipass, full_quality_memory, memory_budget

    mib = 1024 * 1024
    monkeypatch.delenv("WORKER_MEMORY_BUDGET_MB", raising=False)
    monkeypatch.setenv("FLY_VM_MEMORY_MB", "1024")
    assert memory_budget() == 1024 * mib - int(1024 * mib * 0.2)
    assert fits_multipass(12200, 8200, "RGB")  # 100 MP: full quality on the default machine
    assert not fits_multipass(19400, 12900, "RGB")  # 250 MP does not fit 1024 MB
    need = full_quality_memory(19400, 12900, "RGB")
    monkeypatch.setenv("FLY_VM_MEMORY_MB", str(-(-need // mib)))
    assert fits_multipass(19400, 12900, "RGB")  # ... and does on the machine sized for it
    monkeypatch.setenv("FLY_VM_MEMORY_MB", str(need // mib - 2))
    assert not fits_multipass(19400, 12900, "RGB")
    monkeypatch.setenv("WORKER_MEMORY_BUDGET_MB", "300")
    assert memory_budget() == 300 * mib  # the override still wins
