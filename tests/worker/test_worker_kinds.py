"""The TIFF kinds archives lost (issue 9 §1-2): each file is made here, converted by the
worker, and compared with a second decoder (libvips through pyvips, or tifffile plus the
numpy rule) or with the pixels it was made from."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips
import tifffile
import worker_tiffmaker as tm
from PIL import Image
from test_worker_render import GREY, RGB, assert_shows, quadrant_means, write

from worker.exceptions import UnsupportedTiffError
from worker.render import render_first_page


def vips_srgb(path) -> np.ndarray:
    """libvips' own rendering: sRGB (relative colorimetric, black-point compensation
    for an embedded profile), alpha dropped."""
    image = pyvips.Image.new_from_file(str(path))
    if image.get_typeof("icc-profile-data"):
        image = image.icc_transform("srgb", intent="relative", black_point_compensation=True)
    image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image.numpy()[..., :3]


def save(tmp_path, name: str, data: bytes):
    path = tmp_path / f"{name}.tif"
    path.write_bytes(data)
    return path


def index_of_quadrants() -> np.ndarray:
    index = np.zeros(GREY.shape, np.uint8)
    for i, g in enumerate(tm.GREY_QUADRANTS):
        index[g == GREY] = i
    return index


def colour_map(scale: int) -> np.ndarray:
    table = np.zeros((3, 256), np.uint16)
    table[:, :4] = np.array(tm.QUADRANTS, np.uint16).T * scale
    return table


# --- §1 wrong output ---------------------------------------------------------------


def test_palette_with_8_bit_colour_map_is_not_black(tmp_path, convert):
    path = write(tmp_path, "pal-8bit-map", index_of_quadrants(), photometric="palette",
                 colormap=colour_map(1))  # fmt: skip
    out, _ = convert(path)
    assert_shows(out, RGB)


def test_uncompressed_palette_with_orientation(tmp_path, convert):
    path = write(tmp_path, "pal-o6", index_of_quadrants(), photometric="palette",
                 colormap=colour_map(257), extratags=[(274, "H", 1, 6, True)])  # fmt: skip
    out, _ = convert(path)
    assert_shows(out, tm.orient(RGB, 6))
    # libvips does not rotate: the same pixels, before orientation
    assert_shows(tm.orient(out, 8), vips_srgb(path))


def test_tiled_palette_keeps_every_row_of_a_tile(tmp_path, convert):
    rng = np.random.default_rng(4)
    index = rng.integers(0, 4, (50, 70)).astype(np.uint8)  # tiles cut off at both edges
    path = write(tmp_path, "pal-tiles", index, photometric="palette", colormap=colour_map(257),
                 tile=(16, 32), compression="zlib")  # fmt: skip
    image = render_first_page(path, 10**8).image
    assert np.array_equal(np.asarray(image), vips_srgb(path))


def test_12_bit_grey_with_horizontal_predictor(tmp_path, convert):
    stored = np.round(GREY.astype(np.float64) * 4095 / 255).astype(np.uint16)
    path = save(tmp_path, "grey12-pred", tm.grey12_predictor_tiff(stored))
    assert np.array_equal(tifffile.imread(path), stored)  # the second decoder agrees on the file
    out, report = convert(path)
    assert_shows(out, GREY)
    assert report.decoder == "tifffile"  # libtiff refuses the predictor at 12 bits: handed on
    assert any(n.startswith("pillow could not decode it") for n in report.notes), report.notes


def test_planar_tiled_rgb(tmp_path, convert):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (50, 70, 3)).astype(np.uint8)
    path = write(tmp_path, "planar-tiles", np.moveaxis(rgb, -1, 0), photometric="rgb",
                 planarconfig="separate", tile=(16, 32), compression="lzw", predictor=2)  # fmt: skip
    image = render_first_page(path, 10**8).image
    assert np.array_equal(np.asarray(image), tifffile.imread(path).transpose(1, 2, 0))


@pytest.mark.parametrize("samples", [1, 3])
def test_no_photometric_tag_is_guessed_as_libtiff_does(tmp_path, convert, samples):
    pixels = RGB if samples == 3 else GREY
    out, _ = convert(save(tmp_path, f"nophoto-{samples}", tm.no_photometric_tiff(pixels)))
    assert_shows(out, pixels)


def test_16_bit_miniswhite_is_inverted(tmp_path, convert):
    out, _ = convert(write(tmp_path, "mw16", GREY.astype(np.uint16) * 257, photometric="miniswhite"))
    assert_shows(out, 255 - GREY)


def test_gdal_nodata_does_not_swamp_the_stretch(tmp_path, convert):
    dem = GREY.astype(np.float32) * 2  # elevations 60..480
    dem[:, :4] = -999999
    path = write(tmp_path, "dem", dem, photometric="minisblack",
                 extratags=[(42113, "s", 0, "-999999", True)])  # fmt: skip
    out, report = convert(path)
    valid = dem[dem > -999999]
    expected = np.round((dem - valid.min()) * 255.0 / (valid.max() - valid.min()))
    expected[dem == -999999] = 255
    assert_shows(out, expected)
    assert any("no-data -999999" in n for n in report.notes), report.notes


def test_sentinel_border_is_no_data(tmp_path, convert):
    raster = GREY.astype(np.float32)
    raster[:4], raster[:, :4] = 9999, 9999  # a fill border, no GDAL_NODATA tag
    out, report = convert(write(tmp_path, "border", raster, photometric="minisblack"))
    expected = np.round((GREY - 30.0) * 255.0 / 210.0)
    assert_shows(out, expected)
    assert any("sentinel 9999" in n for n in report.notes), report.notes


def test_percentile_stretch_ignores_a_few_outliers(tmp_path, convert):
    raster = GREY.astype(np.float64) - 500.0
    raster[10, 10], raster[50, 80] = 1e6, -1e6  # two hot pixels must not flatten the rest
    out, _ = convert(write(tmp_path, "hot", raster, photometric="minisblack"))
    assert_shows(out, np.round((GREY - 30.0) * 255.0 / 210.0))


def test_float_rgba_outside_unit_range(tmp_path, convert):
    colour = RGB.astype(np.float32) / 100.0  # 0.4 .. 2.4, not display values
    data = np.dstack([colour, np.ones(GREY.shape, np.float32)])
    out, _ = convert(write(tmp_path, "frgba", data, photometric="rgb", extrasamples=["unassalpha"]))
    lo, hi = colour.min(), colour.max()
    assert_shows(out, np.round((colour - lo) * 255.0 / (hi - lo)))


def test_cmyk_with_profile_relative_colorimetric(tmp_path, convert):
    from worker.render import DEFAULT_CMYK_PROFILE

    cmyk = np.zeros((tm.H, tm.W, 4), np.uint8)
    cmyk[..., 1:3] = 255  # magenta + yellow: red
    path = write(tmp_path, "cmyk-red", cmyk, photometric="separated",
                 extratags=[(34675, "B", 0, DEFAULT_CMYK_PROFILE.read_bytes(), True)])  # fmt: skip
    out, _ = convert(path)
    got, want = quadrant_means(out)[0], quadrant_means(vips_srgb(path))[0]
    assert np.abs(got - want).max() <= 4, (got, want)
    assert got[1] > 20  # the perceptual intent's (227, 6, 21) would fail here


def test_cmyk_default_profile_relative_colorimetric(tmp_path, convert):
    from worker.render import DEFAULT_CMYK_PROFILE

    cmyk = np.zeros((tm.H, tm.W, 4), np.uint8)
    cmyk[..., 1:3] = 255
    out, _ = convert(write(tmp_path, "cmyk-red-default", cmyk, photometric="separated"))
    tagged = write(tmp_path, "cmyk-red-tagged", cmyk, photometric="separated",
                   extratags=[(34675, "B", 0, DEFAULT_CMYK_PROFILE.read_bytes(), True)])  # fmt: skip
    assert np.abs(quadrant_means(out)[0] - quadrant_means(vips_srgb(tagged))[0]).max() <= 4


# --- §2 refused, though libvips renders them ---------------------------------------


@pytest.mark.parametrize("sub", [(2, 1), (2, 2), (4, 1), (1, 2)])
def test_uncompressed_ycbcr_subsampled(tmp_path, convert, sub):
    path = save(tmp_path, f"ycbcr-{sub[0]}{sub[1]}", tm.ycbcr_tiff(RGB, sub))
    out, _ = convert(path)
    assert_shows(out, vips_srgb(path))
    assert_shows(out, RGB)


@pytest.mark.parametrize("sub", [(1, 1), (2, 2)])
def test_planar_ycbcr(tmp_path, convert, sub):
    out, _ = convert(save(tmp_path, f"ycbcr-planar-{sub[0]}{sub[1]}", tm.ycbcr_tiff(RGB, sub, True)))
    assert_shows(out, RGB)  # libvips misreads these: the source pixels are the reference


@pytest.mark.parametrize("bits", [1, 8])
def test_tiled_miniswhite(tmp_path, convert, bits):
    stored = GREY > 128 if bits == 1 else GREY
    path = write(tmp_path, f"mw-tiles-{bits}", stored, photometric="miniswhite", tile=(16, 32),
                 compression="zlib", bitspersample=bits)  # fmt: skip
    out, _ = convert(path)
    assert_shows(out, vips_srgb(path)[..., 0])


def test_cielab_16_bit(tmp_path, convert):
    lab = np.zeros((tm.H, tm.W, 3), np.uint16)
    lab[..., 0] = 65535 // 2  # L* = 50
    lab[tm.H // 2 :, :, 1] = 60 * 256  # a* = +60 in the bottom half (int16 in the file)
    path = write(tmp_path, "lab16", lab, photometric="cielab")
    out, _ = convert(path)
    assert_shows(out, vips_srgb(path), tol=4)


@pytest.mark.parametrize("photometric", [8, 9])
def test_8_bit_lab_signed_and_unsigned(tmp_path, convert, photometric):
    lab = np.zeros((tm.H, tm.W, 3), np.uint8)
    lab[..., 0] = 128
    a_star = np.where(np.arange(tm.H)[:, None] >= tm.H // 2, 60, 0)
    lab[..., 1] = (a_star + (128 if photometric == 9 else 0)) % 256
    lab[..., 2] = 0 if photometric == 8 else 128
    out, _ = convert(write(tmp_path, f"lab8-{photometric}", lab, photometric=photometric))
    q = quadrant_means(out)
    assert np.abs(q[0] - 119).max() < 6  # L*=50 neutral: sRGB grey 119, either way
    assert q[2][0] > q[2][1] + 60  # a* = +60 is red, read as the photometric says


def test_itu_lab(tmp_path, convert):
    lab = np.zeros((tm.H, tm.W, 3), np.uint8)
    lab[..., 0] = 128  # L* = 50.2
    lab[..., 1] = 128  # a* = -85 + 128 * 170/255 = 0.3
    lab[..., 2] = 97  # b* = -75 + 97 * 199/255 = 0.7
    out, _ = convert(write(tmp_path, "itulab", lab, photometric=10))
    assert np.abs(quadrant_means(out) - 119).max() < 6


def libtiff_8bit(linear: np.ndarray) -> np.ndarray:
    """libtiff's rendering of SGILOG values (tif_luv.c): Y = 1 white, int(256 sqrt(v))."""
    v = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    return np.where(v >= 1.0, 255, (256.0 * np.sqrt(v)).astype(int))


def test_logl(tmp_path, convert):
    luminance = (GREY.astype(np.float64) / 255.0) ** 2.2
    out, report = convert(save(tmp_path, "logl", tm.logl_tiff(luminance)))
    assert report.decoder == "libvips"
    assert_shows(out, libtiff_8bit(luminance), tol=3)


def test_logluv(tmp_path, convert):
    path = save(tmp_path, "logluv", tm.logluv_tiff(RGB))
    out, report = convert(path)
    assert report.decoder == "libvips"
    q = quadrant_means(out)  # 8-bit u'v' codes are coarse: the hues, not the exact colours
    assert [int(np.argmax(c)) for c in q[:3]] == [0, 1, 2]
    xyz = tm.srgb_to_xyz(np.array([tm.QUADRANTS], np.uint8))[0]  # what the maker stored
    libtiff_rgb = np.array([[2.690, -1.276, -0.414], [-1.022, 1.978, 0.044], [0.061, -0.224, 1.163]])
    assert np.abs(q - libtiff_8bit(xyz @ libtiff_rgb.T)).max() <= 10  # tif_luv.c XYZtoRGB24


def test_odd_tag_type_falls_back_instead_of_an_internal_error(tmp_path, convert):
    data = GREY.tobytes()
    entries = [(258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, "DATA"), (277, 3, 1),
               (278, 4, tm.H), (279, 4, len(data)), (274, 2, "top-left\0")]  # fmt: skip
    out, _ = convert(save(tmp_path, "odd-tag", tm.raw_tiff(tm.W, tm.H, entries, data)))
    assert_shows(out, GREY)


def test_remaining_refusal_says_what_the_file_is(tmp_path, convert):
    data = GREY.tobytes()
    entries = [(258, 3, 8), (259, 3, 1), (262, 3, 32844), (273, 4, "DATA"), (277, 3, 1),
               (278, 4, tm.H), (279, 4, len(data))]  # fmt: skip
    with pytest.raises(UnsupportedTiffError) as info:
        render_first_page(save(tmp_path, "logl-raw", tm.raw_tiff(tm.W, tm.H, entries, data)), 10**8)
    message = str(info.value)
    assert "96 x 64" in message and "logl" in message.lower() and "corrupt" not in message


def test_pillow_decoder_image_is_the_reference(tmp_path):
    """The reference helpers themselves: libvips reads a plain file as Pillow wrote it."""
    path = tmp_path / "plain.tif"
    Image.fromarray(RGB).save(path)
    assert np.array_equal(vips_srgb(path), RGB)


def test_24_bit_planar_tiled_rgb_is_scaled_by_its_depth(tmp_path, convert):
    stored = RGB.astype(np.uint32) * 65793 // 2  # 24-bit samples, half of the range used
    path = write(tmp_path, "rgb24", np.moveaxis(stored, -1, 0), photometric="rgb",
                 bitspersample=24, planarconfig="separate", tile=(16, 32))  # fmt: skip
    assert np.array_equal(tifffile.imread(path).transpose(1, 2, 0), stored)  # tifffile agrees
    out, _ = convert(path)
    assert_shows(out, np.round(stored * 255.0 / (2**24 - 1)))  # not stretched to white
