"""The kinds issue 19 found rendered wrong in public TIFF suites (libtiff's pics,
libtiff.net's TestCase, Pillow's and sharp's test images), as committed fixtures
(tests/worker/fixtures/, README.md there says how each was made) checked against a
reference rendering: libtiff's own (tiff2rgba, committed as PNG), a second decoder
(libvips) or the pixels the file was made from. Real files through the real converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
import worker_tiffmaker as tm
from PIL import Image

from worker.exceptions import UnsupportedTiffError
from worker.render import DEFAULT_CMYK_PROFILE, render_first_page

FIXTURES = Path(__file__).with_name("fixtures")
SOURCE = FIXTURES / "make" / "hopper.png"


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of BT.601 luma, in dB (99 for identical pictures)."""
    def luma(x):
        x = np.asarray(x, np.float64)
        return x if x.ndim == 2 else x[..., :3] @ np.array([0.299, 0.587, 0.114])

    assert np.shape(a)[:2] == np.shape(b)[:2], (np.shape(a), np.shape(b))
    mse = float(np.mean((luma(a) - luma(b)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def libtiff_reference(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{name}.rgba.png").convert("RGB"))


def save(tmp_path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.tif"
    path.write_bytes(data)
    return path


# --- SGI LogLuv / LogL: libtiff's own 8-bit rendering is the reference ---------------


@pytest.mark.parametrize("name", ["logluv24", "logluv32", "logl16"])
def test_sgilog_renders_as_libtiff_does(convert, name):
    """Before issue 19 these showed the 99.5th percentile as white (18.3 dB against
    libtiff's rendering); now Y = 1 is white, libtiff's matrix and gamma 2.0."""
    path = FIXTURES / f"{name}.tif"
    rendering = render_first_page(path, 10**8)
    reference = libtiff_reference(name)
    assert rendering.decoder == "libvips"
    assert luma_psnr(np.asarray(rendering.image), reference) >= 60
    out, _ = convert(path)
    assert luma_psnr(out, reference) >= 38  # through the JPEG at quality 95


def test_logl_with_16_bit_codes_is_the_same_picture(tmp_path):
    """LogL handed over as 16-bit codes (BitsPerSample 16) or as floats renders alike."""
    y = np.linspace(0.0, 2.0, tm.W)[None, :].repeat(tm.H, axis=0)
    out = np.asarray(render_first_page(save(tmp_path, "logl", tm.logl_tiff(y)), 10**8).image)
    expected = np.where(y >= 1, 255, (256 * np.sqrt(np.clip(y, 0, 1))).astype(int))
    assert np.abs(out.astype(int) - expected).max() <= 1  # 1/256-stop codes


# --- YCbCr ---------------------------------------------------------------------------


def test_planar_ycbcr_written_by_tiffcp(convert):
    path = FIXTURES / "ycbcr-planar-lzw.tif"
    assert luma_psnr(np.asarray(render_first_page(path, 10**8).image), libtiff_reference("ycbcr-planar-lzw")) >= 60
    out, _ = convert(path)
    assert luma_psnr(out, libtiff_reference("ycbcr-planar-lzw")) >= 38


def test_planar_ycbcr_full_size_chroma_under_the_default_subsampling(tmp_path):
    """libtiff sizes every plane at full resolution, so a planar file without the
    YCbCrSubsampling tag (TIFF's default: 2x2) may hold full-size chroma planes; read as
    2x2 they are noise (about 12 dB). libtiff refuses the file; the source is the reference."""
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    path = save(tmp_path, "ycc-planar-notag", tm.ycbcr_tiff(rgb, (1, 1), planar=True, tag=None))
    rendering = render_first_page(path, 10**8)
    assert luma_psnr(np.asarray(rendering.image), rgb) >= 45
    assert any("full size" in n for n in rendering.notes), rendering.notes


def test_chunky_ycbcr_444_under_a_subsampling_tag(tmp_path):
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    path = save(tmp_path, "ycc-444-tag12", tm.ycbcr_tiff(rgb, (1, 1), tag=(1, 2)))
    rendering = render_first_page(path, 10**8)
    assert luma_psnr(np.asarray(rendering.image), rgb) >= 45
    assert any("4:4:4" in n for n in rendering.notes), rendering.notes


@pytest.mark.parametrize("sub", [(1, 2), (2, 2), (4, 1), (4, 2), (4, 4)])
def test_chunky_ycbcr_subsampled_textured(tmp_path, sub):
    """A textured picture, not flat quadrants: chroma siting errors would show."""
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    rendering = render_first_page(save(tmp_path, f"ycc{sub}", tm.ycbcr_tiff(rgb, sub)), 10**8)
    assert luma_psnr(np.asarray(rendering.image), rgb) >= 45


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_ycbcr_wider_than_8_bits(tmp_path, convert, bits):
    """libvips showed these raw (Y, Cb, Cr as R, G, B); now converted at their depth."""
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    path = save(tmp_path, f"ycc{bits}", tm.wide_ycbcr_tiff(rgb, bits))
    rendering = render_first_page(path, 10**8)
    assert rendering.decoder == "tifffile"
    assert luma_psnr(np.asarray(rendering.image), rgb) >= 45
    out, _ = convert(path)
    assert luma_psnr(out, rgb) >= 38


def test_ycbcr_16_bit_with_an_8_bit_reference_black_white(tmp_path):
    """tifffile writes ReferenceBlackWhite (0, 255, 128, 255, 128, 255) into 16-bit YCbCr:
    a writer's 8-bit default, taken at the file's depth."""
    ycc = np.zeros((32, 48, 3), np.uint16)
    ycc[..., 0], ycc[..., 1], ycc[..., 2] = 30000, 32768, 60000  # red: Cr high
    path = tmp_path / "ycc16.tif"
    tifffile.imwrite(path, ycc, photometric="ycbcr", subsampling=(1, 1))
    assert tifffile.TiffFile(path).pages.first.tags.valueof(532)[:4] == (0, 1, 255, 1)
    pixel = np.asarray(render_first_page(path, 10**8).image)[0, 0].astype(int)
    assert np.abs(pixel - (255, 41, 117)).max() <= 2, pixel


def test_ycbcr_wider_than_8_bits_with_subsampling_is_refused(tmp_path):
    rgb = np.asarray(Image.open(SOURCE).convert("RGB"))
    with pytest.raises(UnsupportedTiffError) as info:
        render_first_page(save(tmp_path, "ycc12-22", tm.wide_ycbcr_tiff(rgb, 12, (2, 2))), 10**8)
    assert info.value.code == "unsupported"
    assert "12-bit" in str(info.value) and "subsampling" in str(info.value)


def test_libvips_does_not_render_wide_ycbcr(tmp_path):
    """The last decoder in line would show a wide YCbCr file's raw samples as RGB (a
    blue-green picture of a red one): it refuses instead, should the others fail."""
    from worker.render import _render_with_vips

    path = save(tmp_path, "ycc16", tm.wide_ycbcr_tiff(np.asarray(Image.open(SOURCE).convert("RGB")), 16))
    with pytest.raises(UnsupportedTiffError, match="16-bit"):
        _render_with_vips(path, 10**8)


# --- palette, tiled ------------------------------------------------------------------


def test_tiled_4_bit_palette_written_by_libtiff(convert):
    path = FIXTURES / "palette4-tiled.tif"
    assert luma_psnr(np.asarray(render_first_page(path, 10**8).image), libtiff_reference("palette4-tiled")) == 99.0
    out, _ = convert(path)
    assert luma_psnr(out, libtiff_reference("palette4-tiled")) >= 35


# --- CMYK ----------------------------------------------------------------------------


def test_tiled_jpeg_cmyk_from_pillows_suite(convert):
    """Pillow's tiff_tiled_cmyk_jpeg.tif (untagged CMYK, 32 x 32 JPEG tiles): libvips
    decodes the tiles on its own and converts through the same default profile with
    the worker's intent (relative colorimetric + black-point compensation)."""
    path = FIXTURES / "tiff_tiled_cmyk_jpeg.tif"
    image = pyvips.Image.new_from_file(str(path))
    reference = image.icc_transform("srgb", input_profile=str(DEFAULT_CMYK_PROFILE), intent="relative",
                                    black_point_compensation=True).numpy()[..., :3]  # fmt: skip
    rendering = render_first_page(path, 10**8)
    assert luma_psnr(np.asarray(rendering.image), reference) >= 40
    assert np.asarray(rendering.image)[5:20, 5:20].max() <= 12  # rich black is black
    out, _ = convert(path)
    assert luma_psnr(out, reference) >= 32
