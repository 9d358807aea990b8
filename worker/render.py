"""Renders the first page of a TIFF as a viewer shows it: an 8-bit `L` or `RGB` Pillow
image in sRGB, orientation applied, transparency flattened onto white.

Decoders in line: Pillow (libtiff) wherever it renders the file faithfully; tifffile for
what Pillow cannot open, misreads or declines (`_declines` says why), its arrays turned
into images by worker.samples; libvips (worker.vipsdecode) last, for LogLuv and what
neither reads. A decoder's failure hands the file to the next. This module never touches
R2 or the network, and never lets a decoder's exception escape untranslated: a file no
decoder reads becomes a `ConversionError` with a one-line reason naming the file's kind.
Colour goes through worker.colour; the rendering rules are in docs/worker.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from worker import colour
from worker.colour import DEFAULT_CMYK_PROFILE, cmyk_profile_path  # noqa: F401 (re-exported)
from worker.exceptions import (
    ConversionError,
    CorruptTiffError,
    ImageTooLargeError,
    NotATiffError,
    NotEnoughMemoryError,
    UnsupportedTiffError,
)

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

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
    declined: list[str] = []
    for name, decoder in (("pillow", _render_with_pillow), ("tifffile", _render_with_tifffile),
                          ("libvips", _render_with_vips)):  # fmt: skip
        try:
            rendering = decoder(path, max_pixels)
        except _Declined as why:
            if str(why):
                declined.append(f"{name} declined it: {why}")
            continue
        except ImageTooLargeError:
            raise
        except MemoryError:
            raise NotEnoughMemoryError("image too large: not enough memory to decode it") from None
        except ConversionError as exc:
            failures.append((name, exc))
        except Exception as exc:  # a decoder's (or our) bug: the next decoder may still read it
            failures.append((name, ConversionError(f"internal error: {type(exc).__name__}: {exc}")))
        else:  # say in the conversion summary which decoders gave up, and why
            rendering.notes[:0] = declined + [f"{failed} could not decode it: {exc}"
                                              for failed, exc in failures]
            return rendering
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
    """`96 x 64, ycbcr, 3 x 8-bit uint, none, subsampling 2x1`: what the file is, or ""
    when even its directory cannot be read."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            photometric = _enum_name(page.photometric) if 262 in page.tags else "no photometric tag"
            parts = [f"{page.imagewidth} x {page.imagelength}", photometric,
                     f"{page.samplesperpixel} x {page.bitspersample}-bit {_sample_format(page)}",
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


def _sample_format(page) -> str:
    import tifffile

    try:
        return tifffile.SAMPLEFORMAT(int(page.sampleformat)).name.lower()
    except (TypeError, ValueError):
        return str(page.sampleformat)


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
        why = _declines(im, tags)
        if why:
            im.close()
            raise _Declined(why)
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
        image = colour.to_display(im, icc, notes)
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
    width, height, photometric, compression, orientation, pages, bits = header
    _check_pixels(width, height, max_pixels)
    if photometric in (32844, 32845) and compression not in (34676, 34677):
        raise UnsupportedTiffError(
            f"unsupported TIFF: LogLuv/LogL (photometric {photometric}) needs SGILOG "
            f"compression, this file has compression {compression}"
        )
    if photometric == 6 and compression not in (6, 7) and bits != 8:
        raise UnsupportedTiffError(  # libvips would show the raw Y, Cb, Cr samples as RGB
            f"unsupported TIFF: YCbCr with {bits}-bit samples is not converted to RGB by libvips"
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


def _header(path) -> tuple[int, int, int | None, int, int, int, int] | None:
    """(width, height, photometric, compression, orientation, pages, bits per sample) from
    tifffile's parse of the first directory, or None when it cannot be read."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            photometric = int(page.photometric) if 262 in page.tags else None
            orientation = int_tag({274: page.tags.valueof(274, 1)}, 274, 1)
            return (page.imagewidth, page.imagelength, photometric, int(page.compression),
                    orientation, len(tif.pages), int(page.bitspersample))
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

    from worker import ycbcr
    from worker.samples import array_to_image, parse_nodata, samples_last

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
        nodata = parse_nodata(page.tags.valueof(42113)) if 42113 in page.tags else None
        notes: list[str] = []
        try:
            if ycbcr.needs_own_decoder(page):
                data, photometric, axes = ycbcr.decode(tif, page, notes), 2, "YXS"
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
    data = samples_last(np, data, axes)
    image = array_to_image(np, data, photometric, bits, extras, colormap, nodata, notes)
    del data
    image = colour.to_display(image, icc if isinstance(icc, bytes) else None, notes)
    image = _orient(image, orientation, notes)
    _set_dpi(image, dpi, orientation)
    return Rendering(image, pages, source, "tifffile", notes)


def _enum_name(value) -> str:
    return str(getattr(value, "name", value)).lower()
