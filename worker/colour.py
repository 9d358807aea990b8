"""Colour management of decoded images: any Pillow mode -> "L" or "RGB" in sRGB, alpha
flattened onto white, CMYK / L*a*b* / embedded ICC profiles converted by littleCMS
(ImageCms) with relative colorimetric intent and black-point compensation, as libvips
and colour-managed viewers do. Never reads a file but the ICC profiles."""

from __future__ import annotations

import io
import os
from pathlib import Path

from worker.exceptions import UnsupportedTiffError

PROFILES_DIR = Path(__file__).with_name("profiles")
DEFAULT_CMYK_PROFILE = PROFILES_DIR / "default_cmyk.icc"


def to_display(im, icc: bytes | None, notes: list[str]):
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
