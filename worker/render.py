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


def render_first_page(path: str | os.PathLike, max_pixels: int) -> Rendering:
    sniff(path)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the limit is enforced here, before decoding
    try:
        im = Image.open(path)
    except Exception as exc:  # Pillow cannot parse it: let tifffile try
        return _render_with_tifffile(path, max_pixels, pillow_error=exc)
    try:
        pages = _page_count(im)
        _check_pixels(im.width, im.height, max_pixels)
        tags = im.tag_v2
        sample_format = set(_as_tuple(tags.get(339, (1,))))
        bits = _as_tuple(tags.get(258, (1,)))
        planar_wide = tags.get(284, 1) == 2 and max(bits) > 8  # Pillow misreads these
        if im.mode not in _PILLOW_MODES or sample_format - {1} or planar_wide:
            im.close()
            return _render_with_tifffile(path, max_pixels, pillow_error=None)
        _check_memory(im.width * im.height, im.mode, int(tags.get(274, 1) or 1))
        compression = _compression_name(im)
        source = f"{im.mode} {max(bits)}-bit {compression}"
        icc = im.info.get("icc_profile")
        dpi = _valid_dpi(im.info.get("dpi"))
        notes: list[str] = []
        applied = int(tags.get(274, 1) or 1)
        try:
            im.load()
        except Exception as exc:
            if tags.get(259, 1) in _PILLOW_COMPRESSIONS:
                raise _decode_error(exc) from None
            im.close()  # a codec Pillow's libtiff may lack (WebP, JPEG XL...): tifffile
            return _render_with_tifffile(path, max_pixels, pillow_error=exc)
        # Recent Pillow applies the Orientation tag on load and then drops it; older
        # Pillow leaves both to us.
        orientation = int(im.tag_v2.get(274, 1) or 1)
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
        raise ImageTooLargeError(
            f"image too large: decoding this {mode} image of {pixels / 1e6:.1f} megapixels "
            f"needs about {need >> 20} MB, the machine has {memory >> 20} MB"
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
        return ImageTooLargeError("not enough memory to decode the image")
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
                im, profile, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )
        else:
            rgb = ImageCms.profileToProfile(
                im, profile, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
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
            im, profile, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
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


def _render_with_tifffile(path, max_pixels: int, pillow_error: Exception | None) -> Rendering:
    try:
        import numpy as np
        import tifffile
    except ImportError:  # pragma: no cover - both are worker requirements
        raise _decode_error(pillow_error or ValueError("unsupported TIFF")) from None

    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise _decode_error(pillow_error or exc) from None
    with tif:
        try:
            pages = len(tif.pages)
            page = tif.pages.first if pages else None
        except Exception as exc:
            raise _decode_error(exc) from None
        if page is None:
            raise CorruptTiffError("truncated or corrupt TIFF: no readable image directory")
        _check_pixels(page.imagewidth, page.imagelength, max_pixels)
        photometric = int(page.photometric)
        bits = int(page.bitspersample)
        extras = tuple(int(x) for x in (page.extrasamples or ()))
        orientation = int(page.tags.valueof(274, 1) or 1)
        icc = page.tags.valueof(34675)
        colormap = page.colormap
        dpi = _tiff_dpi(page)
        compression = _enum_name(page.compression)
        sample_format = _enum_name(page.sampleformat)
        try:
            data = page.asarray()
        except (NotImplementedError, ImportError) as exc:
            raise UnsupportedTiffError(f"unsupported TIFF: {exc}") from None
        except ValueError as exc:
            if "requires" in str(exc) or "not supported" in str(exc):
                raise UnsupportedTiffError(f"unsupported TIFF: {exc}") from None
            raise _decode_error(exc) from None
        except Exception as exc:
            raise _decode_error(exc) from None
        axes = page.axes
    source = f"photometric {photometric} {bits}-bit {sample_format} {compression}"
    data = _samples_last(np, data, axes)
    notes: list[str] = []
    image = _array_to_image(np, data, photometric, bits, extras, colormap, notes)
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


def _to_uint8(np, data, bits: int):
    """Scale any sample type to uint8 by the rules in the module docstring."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    kind = data.dtype.kind
    if kind == "u" and data.dtype.itemsize <= 2:
        bits = bits if 0 < bits <= 8 * data.dtype.itemsize else 8 * data.dtype.itemsize
        if bits == 8:
            return data.astype(np.uint8, copy=False)
        return _affine(np, data, 255.0 / ((1 << bits) - 1), 0.0)
    if kind == "f":
        finite = data[np.isfinite(data)] if not np.isfinite(data).all() else data
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if lo >= 0.0 and hi <= 1.0:
            return _affine(np, np.nan_to_num(data, nan=0.0), 255.0, 0.0)
        data = np.nan_to_num(data, nan=lo, posinf=hi, neginf=lo)
    else:
        lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    scale = 255.0 / (hi - lo)
    return _affine(np, data, scale, -lo * scale)


def _affine(np, data, scale: float, offset: float):
    """round(data * scale + offset) clipped to uint8, a block of rows at a time."""
    out = np.empty(data.shape, np.uint8)
    step = max(1, (8 << 20) // max(1, data[0].size))
    for y in range(0, data.shape[0], step):
        block = data[y : y + step].astype(np.float64) * scale + offset + 0.5
        np.clip(block, 0, 255, out=block)
        out[y : y + step] = block.astype(np.uint8)
    return out


def _array_to_image(np, data, photometric: int, bits: int, extras, colormap, notes):
    from PIL import Image

    samples = data.shape[2] if data.ndim == 3 else 1
    if photometric == 3:  # palette
        if colormap is None:
            raise CorruptTiffError("truncated or corrupt TIFF: palette image without colour map")
        lut = _to_uint8(np, np.asarray(colormap).T.astype(np.uint16), 16)
        index = data if data.ndim == 2 else data[..., 0]
        return Image.fromarray(np.ascontiguousarray(lut[np.minimum(index, len(lut) - 1)]), "RGB")
    if photometric == 8 and data.dtype in (np.uint8, np.int8) and samples >= 3:  # CIELAB
        raw = data.view(np.uint8)
        lab = raw[..., :3].copy()
        lab[..., 1:] = (raw[..., 1:3].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return Image.fromarray(lab, "LAB")
    if photometric not in (0, 1, 2, 5):
        raise UnsupportedTiffError(f"unsupported TIFF: photometric interpretation {photometric}")
    pixels = _to_uint8(np, data, bits)
    colour = {0: 1, 1: 1, 2: 3, 5: 4}[photometric]
    if samples < colour:
        raise CorruptTiffError(
            f"truncated or corrupt TIFF: {samples} samples for photometric {photometric}"
        )
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    alpha = None
    if samples > colour and extras and extras[0] in (1, 2):
        alpha = pixels[..., colour].astype(np.float32) / 255.0
        premultiplied = extras[0] == 1
    base = pixels[..., :colour]
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
    mode = {1: "L", 3: "RGB", 4: "CMYK"}[colour]
    base = np.ascontiguousarray(base if colour > 1 else base[..., 0])
    return Image.fromarray(base, mode)
