"""Renders the first page of a TIFF as a viewer shows it: an 8-bit `L` or `RGB` Pillow
image in sRGB, orientation applied, transparency flattened onto white.

Decoding is Pillow's (libtiff) wherever Pillow renders the file faithfully; files Pillow
cannot open or would misread (planar strips, 12-bit colour, signed, 32-bit and float
samples) are decoded with tifffile and scaled here. This module never touches R2 or the
network, and never lets a decoder's exception escape untranslated: everything wrong with
the file becomes a `ConversionError` with a one-line reason.

Rendering rules (docs/worker.md):
- unsigned integers of N <= 16 bits: v * 255 / (2**N - 1) (a 12-bit scan uses 4095);
- float samples: x 255 when every finite value lies in [0, 1], else stretched min..max;
- signed and 32/64-bit integers: stretched min..max of the page;
- MinIsWhite inverted; palette through its colour map;
- CMYK, CIELAB and anything with an embedded ICC profile converted to sRGB by
  littleCMS (ImageCms); CMYK without a profile goes through a standard SWOP profile;
- alpha (associated or not) composited onto white.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from worker.exceptions import (
    ConversionError,
    CorruptTiffError,
    ImageTooLargeError,
    NotATiffError,
    NotEnoughMemoryError,
    UnsupportedTiffError,
)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PROFILES_DIR = Path(__file__).with_name("profiles")
DEFAULT_CMYK_PROFILE = PROFILES_DIR / "default_cmyk.icc"

# Modes Pillow decodes faithfully (with the post-processing below).
_PILLOW_MODES = {
    "1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "LAB", "YCbCr",
    "I;16", "I;16L", "I;16B", "I;16N",
}  # fmt: skip

# Compressions Pillow's libtiff decodes; a failure with one of these is the file's fault.
# none, CCITT RLE/G3/G4, LZW, old/new JPEG, Adobe Deflate, PackBits, Deflate, LZMA, Zstd
_PILLOW_COMPRESSIONS = {1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946, 34925, 50000}

# TIFF Orientation -> Pillow transpose (as ImageOps.exif_transpose).
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
                6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


@dataclass
class Rendering:
    image: object  # PIL.Image.Image, mode "L" or "RGB"
    pages: int
    source: str  # what the page was, e.g. "RGB 16-bit lzw"
    decoder: str  # "pillow" or "tifffile"
    notes: list[str] = field(default_factory=list)


def sniff(path: str | os.PathLike) -> None:
    """Reject what is not a TIFF before any decoder sees it."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise ConversionError(f"no such file: {os.fspath(path)}") from None
    except OSError as exc:
        raise ConversionError(f"cannot read the file: {exc.strerror or exc}") from None
    if not head:
        raise NotATiffError("not a TIFF file: the file is empty")
    if head[:4] not in TIFF_MAGICS:
        raise NotATiffError(f"not a TIFF file: it starts with {head[:8]!r}")
    if len(head) < 8:
        raise CorruptTiffError("truncated TIFF: the header is incomplete")


class _Declined(Exception):
    """A decoder knows it would misread this file: the next one should decode it."""


def render_first_page(path: str | os.PathLike, max_pixels: int) -> Rendering:
    """Pillow, then tifffile, then libvips: the first that reads the file renders it. A
    decoder's failure (even an exception of ours) hands the file to the next one; only
    when all fail is the file refused, with what it is and the most telling reason."""
    sniff(path)
    failures: list[tuple[str, ConversionError]] = []
    for name, decoder in (("pillow", _render_with_pillow), ("tifffile", _render_with_tifffile),
                          ("libvips", _render_with_vips)):  # fmt: skip
        try:
            return decoder(path, max_pixels)
        except _Declined:
            continue
        except ImageTooLargeError:
            raise
        except MemoryError:
            raise NotEnoughMemoryError("image too large: not enough memory to decode it") from None
        except ConversionError as exc:
            failures.append((name, exc))
        except Exception as exc:  # a decoder's (or our) bug: the next decoder may still read it
            failures.append((name, ConversionError(f"internal error: {type(exc).__name__}: {exc}")))
    raise _verdict(path, failures)


def _verdict(path, failures: list[tuple[str, ConversionError]]) -> ConversionError:
    """tifffile parses most strictly, so its reason wins; a typed reason beats an
    internal one; the file's kind is named so the refusal says what it refused."""
    if not failures:
        return UnsupportedTiffError("unsupported TIFF: no decoder reads this file")
    reasons = dict(failures)
    chosen = reasons.get("tifffile") or failures[0][1]
    typed = [e for _, e in failures if type(e) is not ConversionError]
    if type(chosen) is ConversionError and typed:
        chosen = typed[0]
    kind = describe_kind(path)
    if not kind or kind in str(chosen):
        return chosen
    return type(chosen)(f"{chosen} (the file: {kind})")


def describe_kind(path) -> str:
    """`96 x 64, YCbCr, 3 x 8-bit uint, none, subsampling 2x1`: what the file is, or ""
    when even its directory cannot be read."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            photometric = _enum_name(page.photometric) if 262 in page.tags else "no photometric tag"
            parts = [f"{page.imagewidth} x {page.imagelength}", photometric,
                     f"{page.samplesperpixel} x {page.bitspersample}-bit {_enum_name(page.sampleformat)}",
                     _enum_name(page.compression)]  # fmt: skip
            if page.planarconfig == 2:
                parts.append("planar")
            if page.is_tiled:
                parts.append("tiled")
            sub = page.tags.valueof(530)
            if int(page.photometric) == 6 and sub:
                parts.append(f"subsampling {sub[0]}x{sub[1]}")
            return ", ".join(parts)
    except Exception:
        return ""


def int_tag(tags, tag: int, default: int) -> int:
    """A tag's first value as an int, the default when it is absent or of an odd type
    (an ASCII Orientation, a RATIONAL PlanarConfiguration...)."""
    try:
        value = tags.get(tag, default)
        value = value[0] if isinstance(value, tuple | list) and value else value
        return int(value) if value is not None else default
    except (TypeError, ValueError, OverflowError):
        return default


def _declines(im, tags) -> str | None:
    """Why Pillow would misread this file, or None when it reads it faithfully."""
    sample_format = set(_as_tuple(tags.get(339, (1,))))
    bits = _as_tuple(tags.get(258, (1,)))
    photometric = int_tag(tags, 262, -1)
    compression = int_tag(tags, 259, 1)
    if im.mode not in _PILLOW_MODES or sample_format - {1}:
        return "a mode Pillow does not render"
    if int_tag(tags, 284, 1) == 2 and max(bits) > 8:
        return "planar samples wider than 8 bits"
    if 262 not in tags:
        return "no photometric tag (Pillow guesses it wrong for colour)"
    if int_tag(tags, 274, 1) in (5, 6, 7, 8) and compression == 1:
        return "uncompressed with a transposing orientation (Pillow shears the rows)"
    if photometric == 3 and max(_as_tuple(tags.get(320, (0,)))) <= 255:
        return "a colour map of 8-bit values"
    if photometric == 0 and max(bits) > 8:
        return "MinIsWhite wider than 8 bits (Pillow does not invert it)"
    if photometric == 6 and compression not in (6, 7):
        sub = _as_tuple(tags.get(530, (2, 2)))
        if tuple(sub) != (1, 1) or int_tag(tags, 284, 1) == 2:
            return "YCbCr with chroma subsampling or planes, not JPEG-compressed"
    return None


def _render_with_pillow(path, max_pixels: int) -> Rendering:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the limit is enforced here, before decoding
    try:
        im = Image.open(path)
    except Exception:  # Pillow cannot parse it: the next decoder
        raise _Declined from None
    try:
        pages = _page_count(im)
        _check_pixels(im.width, im.height, max_pixels)
        tags = im.tag_v2
        if _declines(im, tags):
            im.close()
            raise _Declined
        bits = _as_tuple(tags.get(258, (1,)))
        applied = int_tag(tags, 274, 1)
        _check_memory(im.width * im.height, im.mode, applied)
        source = f"{im.mode} {max(bits)}-bit {_compression_name(im)}"
        icc = im.info.get("icc_profile")
        dpi = _valid_dpi(im.info.get("dpi"))
        notes: list[str] = []
        try:
            im.load()
        except Exception as exc:
            raise _decode_error(exc) from None
        # Recent Pillow applies the Orientation tag on load and then drops it; older
        # Pillow leaves both to us.
        orientation = int_tag(im.tag_v2, 274, 1)
        if applied != 1 and orientation == 1:
            notes.append(f"orientation {applied} applied")
        if im.mode.startswith("I;16"):
            im = _scale_i16(im, max(bits) if max(bits) <= 16 else 16)
        _close_file(im)
        image = _to_display(im, icc, notes)
        image = _orient(image, orientation, notes)
        _set_dpi(image, dpi, applied)
        return Rendering(image, pages, source, "pillow", notes)
    except BaseException:
        _close_file(im)
        raise


def _render_with_vips(path, max_pixels: int) -> Rendering:
    from worker import vipsdecode

    header = _header(path)
    if header is None:
        raise _Declined
    width, height, photometric, compression, orientation, pages = header
    _check_pixels(width, height, max_pixels)
    if photometric in (32844, 32845) and compression not in (34676, 34677):
        raise UnsupportedTiffError(
            f"unsupported TIFF: LogLuv/LogL (photometric {photometric}) needs SGILOG "
            f"compression, this file has compression {compression}"
        )
    notes: list[str] = []
    try:
        image = vipsdecode.render(str(path), photometric, notes)
    except ConversionError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()
        raise _decode_error(ValueError(message[-1].strip() if message else type(exc).__name__)) from None
    image = _orient(image, orientation, notes)
    return Rendering(image, pages, f"photometric {photometric}", "libvips", notes)


def _header(path) -> tuple[int, int, int | None, int, int, int] | None:
    """(width, height, photometric, compression, orientation, pages) from tifffile's parse of the
    first directory, or None when it cannot be read."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            photometric = int(page.photometric) if 262 in page.tags else None
            orientation = int_tag({274: page.tags.valueof(274, 1)}, 274, 1)
            return (page.imagewidth, page.imagelength, photometric, int(page.compression),
                    orientation, len(tif.pages))
    except Exception:
        return None


def _close_file(im) -> None:
    """Release the file handle Pillow keeps for multi-page files; the pixels stay."""
    closer = getattr(im, "_close_fp", None)
    try:
        if closer is not None:
            closer()
        elif getattr(im, "fp", None) is not None:
            im.fp.close()
    except Exception:
        pass


def _page_count(im) -> int:
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception:
        return 1


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise CorruptTiffError(f"invalid image size {width} x {height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image too large: {width} x {height} = {width * height / 1e6:.1f} megapixels, "
            f"the limit is {max_pixels / 1e6:.1f} megapixels (WORKER_MAX_PIXELS)"
        )


_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 7, "I;16L": 7, "I;16B": 7,
                 "I;16N": 7}  # fmt: skip


def _check_memory(pixels: int, mode: str, orientation: int) -> None:
    """Refuse up front what Pillow cannot decode whole in this machine's memory (the
    out-of-memory killer would otherwise end the conversion half-way)."""
    from worker.settings import memory_limit_bytes

    need = pixels * _PILLOW_BYTES.get(mode, 4)
    if mode not in ("1", "L", "RGB") or orientation != 1:
        need *= 2  # a converted or rotated copy exists for a moment
    need += 64 * 1024 * 1024
    memory = memory_limit_bytes()
    if need > memory:
        raise NotEnoughMemoryError(
            f"image too large: decoding this {mode} image of {pixels / 1e6:.1f} megapixels "
            f"needs about {need >> 20} MB, the machine has {memory >> 20} MB"
        )


def _check_array_memory(pixels: int, samples: int, dtype) -> None:
    """The tifffile path holds the decoded array (and a float copy of a block at a
    time) plus the 8-bit image and one converted copy of it."""
    from worker.settings import memory_limit_bytes

    itemsize = getattr(dtype, "itemsize", 1) or 1
    need = pixels * samples * itemsize + pixels * 4 * 2 + 64 * 1024 * 1024
    memory = memory_limit_bytes()
    if need > memory:
        raise NotEnoughMemoryError(
            f"image too large: decoding this image of {pixels / 1e6:.1f} megapixels "
            f"({samples} x {8 * itemsize}-bit samples) needs about {need >> 20} MB, "
            f"the machine has {memory >> 20} MB"
        )


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _compression_name(im) -> str:
    return str(im.info.get("compression", "raw"))


def _decode_error(exc: Exception) -> ConversionError:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "not available" in lowered or "unsupported" in lowered or "not supported" in lowered:
        return UnsupportedTiffError(f"unsupported TIFF: {text}")
    if isinstance(exc, MemoryError):
        return NotEnoughMemoryError("not enough memory to decode the image")
    return CorruptTiffError(f"truncated or corrupt TIFF: {text}")


# --- Pillow post-processing -------------------------------------------------------------


def _scale_i16(im, bits: int):
    """16-bit (or 12-bit stored in 16) greyscale to 8 bits, scaled by the bit depth."""
    scale = 255.0 / ((1 << bits) - 1)
    wide = im.convert("I")
    im.close()
    scaled = wide.point(lambda v: v * scale + 0.5)
    wide.close()
    return scaled.convert("L")


def _to_display(im, icc: bytes | None, notes: list[str]):
    """Any decoded mode -> "L" or "RGB" in sRGB, alpha flattened onto white."""
    from PIL import Image

    mode = im.mode
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        mode = im.mode
    if mode == "RGBa":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "YCbCr":
        im = im.convert("RGB")
        mode = "RGB"
    if mode == "RGBX":
        im = im.convert("RGB")
        mode = "RGB"
    if mode in ("LA", "RGBA"):
        base = "L" if mode == "LA" else "RGB"
        background = Image.new(base, im.size, 255 if base == "L" else (255, 255, 255))
        background.paste(im.convert(base), mask=im.getchannel("A"))
        im.close()
        im, mode = background, base
        notes.append("alpha flattened onto white")
    if mode == "CMYK":
        return _cmyk_to_srgb(im, icc, notes)
    if mode == "LAB":
        from PIL import ImageCms

        lab = ImageCms.createProfile("LAB")
        srgb = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, lab, srgb, outputMode="RGB")
        notes.append("CIELAB converted to sRGB")
        return out
    if icc and mode in ("L", "RGB"):
        return _apply_icc(im, icc, notes)
    if mode not in ("L", "RGB"):
        return im.convert("RGB")
    return im


def _intent() -> dict:
    """Relative colorimetric with black-point compensation: what libvips and
    colour-managed viewers use, so pure red stays (228, 31, 37), not (227, 6, 21)."""
    from PIL import ImageCms

    return {"renderingIntent": ImageCms.Intent.RELATIVE_COLORIMETRIC,
            "flags": ImageCms.Flags.BLACKPOINTCOMPENSATION}  # fmt: skip


def _open_profile(icc: bytes):
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").strip()
        return profile, description, profile.profile.xcolor_space.strip()
    except Exception:
        return None, "", ""


def _apply_icc(im, icc: bytes, notes: list[str]):
    from PIL import ImageCms

    profile, description, space = _open_profile(icc)
    if profile is None:
        notes.append("unreadable ICC profile ignored")
        return im
    if description.lower().startswith("srgb"):
        return im  # already sRGB: nothing to do
    if (im.mode, space) not in (("RGB", "RGB"), ("L", "GRAY")):
        notes.append(f"ICC profile {description!r} ({space}) does not fit {im.mode}; ignored")
        return im
    srgb = ImageCms.createProfile("sRGB")
    try:
        if im.mode == "RGB":
            out = ImageCms.profileToProfile(
                im, profile, srgb, **_intent(), outputMode="RGB"
            )
        else:
            rgb = ImageCms.profileToProfile(
                im, profile, srgb, **_intent(), outputMode="RGB"
            )
            out = rgb.convert("L")
            rgb.close()
    except Exception as exc:
        notes.append(f"ICC profile {description!r} could not be applied ({exc}); ignored")
        return im
    im.close()
    notes.append(f"ICC profile {description!r} converted to sRGB")
    return out


def cmyk_profile_path() -> Path:
    return Path(os.environ.get("WORKER_CMYK_PROFILE") or DEFAULT_CMYK_PROFILE)


def _cmyk_to_srgb(im, icc: bytes | None, notes: list[str]):
    from PIL import ImageCms

    profile, description = None, ""
    if icc:
        profile, description, space = _open_profile(icc)
        if profile is not None and space != "CMYK":
            notes.append(f"ICC profile {description!r} ({space}) does not fit CMYK; ignored")
            profile = None
    if profile is None:
        path = cmyk_profile_path()
        try:
            profile = ImageCms.getOpenProfile(str(path))
            description = f"default {ImageCms.getProfileDescription(profile).strip()}"
        except Exception:
            notes.append("no CMYK profile available; naive CMYK conversion")
            return im.convert("RGB")
    srgb = ImageCms.createProfile("sRGB")
    try:
        out = ImageCms.profileToProfile(
            im, profile, srgb, **_intent(), outputMode="RGB"
        )
    except Exception as exc:
        raise UnsupportedTiffError(f"unsupported TIFF: CMYK conversion failed ({exc})") from None
    im.close()
    notes.append(f"CMYK converted to sRGB through {description!r}")
    return out


def _valid_dpi(dpi) -> tuple[float, float] | None:
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if 1 <= x <= 100_000 and 1 <= y <= 100_000 else None


def _tiff_dpi(page) -> tuple[float, float] | None:
    try:
        unit = int(page.tags.valueof(296, 2))
        xres, yres = page.tags.valueof(282), page.tags.valueof(283)
        if unit not in (2, 3) or not xres or not yres:
            return None
        x, y = xres[0] / xres[1], yres[0] / yres[1]
        return _valid_dpi((x * 2.54, y * 2.54) if unit == 3 else (x, y))
    except Exception:
        return None


def _set_dpi(image, dpi, orientation: int) -> None:
    if dpi:
        image.info["dpi"] = (dpi[1], dpi[0]) if orientation in (5, 6, 7, 8) else dpi


def _orient(im, orientation: int, notes: list[str]):
    name = _ORIENTATION.get(orientation)
    if not name:
        return im
    from PIL import Image

    out = im.transpose(getattr(Image.Transpose, name))
    im.close()
    notes.append(f"orientation {orientation} applied")
    return out


# --- tifffile decoding -----------------------------------------------------------------


def _render_with_tifffile(path, max_pixels: int) -> Rendering:
    import numpy as np
    import tifffile

    from worker import stretch, ycbcr

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise _decode_error(exc) from None
    with tif:
        try:
            pages = len(tif.pages)
            page = tif.pages.first if pages else None
        except Exception as exc:
            raise _decode_error(exc) from None
        if page is None:
            raise CorruptTiffError("truncated or corrupt TIFF: no readable image directory")
        _check_pixels(page.imagewidth, page.imagelength, max_pixels)
        samples = int(page.samplesperpixel)
        _check_array_memory(page.imagewidth * page.imagelength, samples, page.dtype)
        # No Photometric tag: libtiff's guess, RGB for three samples or more, else grey.
        photometric = int(page.photometric) if 262 in page.tags else (2 if samples >= 3 else 1)
        if photometric in (32844, 32845):
            raise UnsupportedTiffError("unsupported TIFF: LogLuv needs libtiff's SGILOG codec")
        bits = int(page.bitspersample)
        extras = tuple(int(x) for x in (page.extrasamples or ()))
        orientation = int_tag({274: page.tags.valueof(274, 1)}, 274, 1)
        icc = page.tags.valueof(34675)
        colormap = page.colormap
        dpi = _tiff_dpi(page)
        compression = _enum_name(page.compression)
        sample_format = _enum_name(page.sampleformat)
        nodata = stretch.parse_nodata(page.tags.valueof(42113)) if 42113 in page.tags else None
        try:
            if ycbcr.needs_own_decoder(page):
                data, photometric, axes = ycbcr.decode(tif, page), 2, "YXS"
            else:
                data, axes = page.asarray(), page.axes
        except (NotImplementedError, ImportError) as exc:
            raise UnsupportedTiffError(f"unsupported TIFF: {exc}") from None
        except ValueError as exc:
            if "requires" in str(exc) or "not supported" in str(exc):
                raise UnsupportedTiffError(f"unsupported TIFF: {exc}") from None
            raise _decode_error(exc) from None
        except Exception as exc:
            raise _decode_error(exc) from None
    source = f"photometric {photometric} {bits}-bit {sample_format} {compression}"
    data = _samples_last(np, data, axes)
    notes: list[str] = []
    image = _array_to_image(np, data, photometric, bits, extras, colormap, nodata, notes)
    del data
    image = _to_display(image, icc if isinstance(icc, bytes) else None, notes)
    image = _orient(image, orientation, notes)
    _set_dpi(image, dpi, orientation)
    return Rendering(image, pages, source, "tifffile", notes)


def _enum_name(value) -> str:
    return str(getattr(value, "name", value)).lower()


def _samples_last(np, data, axes: str):
    """tifffile's array -> (H, W) or (H, W, S)."""
    keep = [i for i, a in enumerate(axes) if a in "YXS"]
    for i in reversed(range(len(axes))):
        if i not in keep:
            data = data.take(0, axis=i)
    axes = "".join(a for a in axes if a in "YXS")
    if "S" in axes and axes != "YXS":
        data = np.moveaxis(data, axes.index("S"), -1)
    return np.ascontiguousarray(data)


def _to_uint8(np, data, bits: int, nodata: float | None, notes: list[str]):
    """Scale any sample type to uint8 by the rules in the module docstring; returns the
    samples and the mask of no-data samples (None when there is none)."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255, None
    kind = data.dtype.kind
    if kind == "u" and data.dtype.itemsize <= 2 and nodata is None:
        bits = bits if 0 < bits <= 8 * data.dtype.itemsize else 8 * data.dtype.itemsize
        if bits == 8:
            return data.astype(np.uint8, copy=False), None
        return _affine(np, data, 255.0 / ((1 << bits) - 1), 0.0), None
    if kind == "f" and nodata is None:
        finite = np.isfinite(data)
        values = data[finite] if not finite.all() else data
        if values.size and float(values.min()) >= 0.0 and float(values.max()) <= 1.0:
            return _affine(np, np.nan_to_num(data, nan=0.0), 255.0, 0.0), None
    from worker import stretch

    pixels, invalid = stretch.stretch(data, nodata, notes)
    return pixels, invalid if invalid.any() else None


def _affine(np, data, scale: float, offset: float):
    """round(data * scale + offset) clipped to uint8, a block of rows at a time."""
    out = np.empty(data.shape, np.uint8)
    step = max(1, (8 << 20) // max(1, data[0].size))
    for y in range(0, data.shape[0], step):
        block = data[y : y + step].astype(np.float64) * scale + offset + 0.5
        np.clip(block, 0, 255, out=block)
        out[y : y + step] = block.astype(np.uint8)
    return out


_LAB = {8: "CIELAB", 9: "ICC L*a*b*", 10: "ITU L*a*b*"}


def _lab_to_pillow(np, data, photometric: int):
    """Any TIFF L*a*b* (8/16-bit; CIELab with signed a*/b*, ICCLab with unsigned ones
    offset by half the range, ITULab with the default Decode ranges) as Pillow's 8-bit
    LAB (L* x 2.55, a*/b* as signed bytes)."""
    raw = data[..., :3]
    top = 255.0 if raw.dtype.itemsize == 1 else 65535.0
    unsigned = raw.view(np.uint8 if raw.dtype.itemsize == 1 else np.uint16).astype(np.float64)
    if photometric == 10:
        lightness = unsigned[..., 0] * 100.0 / top
        a = -85.0 + unsigned[..., 1] * 170.0 / top
        b = -75.0 + unsigned[..., 2] * 199.0 / top
    else:
        lightness = unsigned[..., 0] * 100.0 / top
        if photometric == 8:
            signed = raw.view(np.int8 if raw.dtype.itemsize == 1 else np.int16).astype(np.float64)
            ab = signed[..., 1:]
        else:
            ab = unsigned[..., 1:] - (top + 1) / 2
        ab = ab if raw.dtype.itemsize == 1 else ab / 256.0
        a, b = ab[..., 0], ab[..., 1]
    out = np.empty(lightness.shape + (3,), np.uint8)
    out[..., 0] = np.clip(lightness * 2.55 + 0.5, 0, 255).astype(np.uint8)
    for i, channel in ((1, a), (2, b)):  # Pillow's LAB keeps a*/b* as signed bytes
        out[..., i] = np.clip(np.round(channel), -128, 127).astype(np.int8).view(np.uint8)
    return out


def _palette(np, data, colormap):
    """Indices through the colour map; a map of 8-bit values (0-255, written by some
    tools instead of TIFF's 16-bit range) is taken as such instead of turning black."""
    table = np.asarray(colormap).T.astype(np.float64)
    scale = 1.0 if table.max() <= 255 else 255.0 / 65535.0
    lut = np.clip(table * scale + 0.5, 0, 255).astype(np.uint8)
    index = data if data.ndim == 2 else data[..., 0]
    return np.ascontiguousarray(lut[np.minimum(index, len(lut) - 1)])


def _split_alpha(np, data, colour: int, extras):
    """(colour samples, alpha in 0..1 or None, premultiplied)."""
    samples = data.shape[2] if data.ndim == 3 else 1
    if samples <= colour or not extras or extras[0] not in (1, 2):
        return (data if data.ndim == 2 else data[..., :colour]), None, False
    alpha = data[..., colour]
    if alpha.dtype.kind == "f":
        alpha = np.clip(np.nan_to_num(alpha.astype(np.float32), nan=1.0), 0.0, 1.0)
    elif alpha.dtype.kind == "u":
        alpha = alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max)
    else:
        alpha = np.clip(alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max), 0.0, 1.0)
    return data[..., :colour], alpha, extras[0] == 1


def _array_to_image(np, data, photometric: int, bits: int, extras, colormap, nodata, notes):
    from PIL import Image

    samples = data.shape[2] if data.ndim == 3 else 1
    if photometric == 3:  # palette
        if colormap is None:
            raise CorruptTiffError("truncated or corrupt TIFF: palette image without colour map")
        return Image.fromarray(_palette(np, data, colormap), "RGB")
    if photometric in _LAB and samples >= 3 and data.dtype.itemsize <= 2:
        notes.append(f"{_LAB[photometric]} {8 * data.dtype.itemsize}-bit read as such")
        return Image.fromarray(_lab_to_pillow(np, data, photometric), "LAB")
    if photometric not in (0, 1, 2, 5):
        raise UnsupportedTiffError(f"unsupported TIFF: photometric interpretation {photometric}")
    colour = {0: 1, 1: 1, 2: 3, 5: 4}[photometric]
    if samples < colour:
        raise CorruptTiffError(
            f"truncated or corrupt TIFF: {samples} samples for photometric {photometric}"
        )
    base, alpha, premultiplied = _split_alpha(np, data, colour, extras)
    base, invalid = _to_uint8(np, base, bits, nodata, notes)
    if base.ndim == 2:
        base = base[..., None]
        invalid = invalid[..., None] if invalid is not None else None
    if photometric == 0:
        base = 255 - base
    if alpha is not None:
        colours = base.astype(np.float32)
        if photometric == 5:  # CMYK over white paper: no ink where transparent
            colours = colours if premultiplied else colours * alpha[..., None]
        else:
            white = 255.0 * (1.0 - alpha[..., None])
            colours = colours + white if premultiplied else colours * alpha[..., None] + white
        base = np.clip(colours + 0.5, 0, 255).astype(np.uint8)
        notes.append("alpha flattened onto white")
    if invalid is not None:  # no-data shows as nothing: white paper (no ink for CMYK)
        hole = invalid.all(axis=2)
        base[hole] = 0 if photometric == 5 else 255
    mode = {1: "L", 3: "RGB", 4: "CMYK"}[colour]
    base = np.ascontiguousarray(base if colour > 1 else base[..., 0])
    return Image.fromarray(base, mode)
