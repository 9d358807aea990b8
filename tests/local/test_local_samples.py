"""Sample TIFFs: every kind decodes with Pillow at the size promised; the broken one does not."""

from __future__ import annotations

import pytest
from PIL import Image, UnidentifiedImageError

from arke_local.samples import BROKEN, KINDS, generate_batch

EXPECTED_MODES = {
    "rgb": "RGB", "rgb_lzw": "RGB", "grey": "L", "grey16": "I;16", "rgb48": "RGB",
    "cmyk": "CMYK", "bilevel": "1", "palette": "P", "rgba": "RGBA", "tiled": "RGB",
    "multipage": "RGB",
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    return folder, generate_batch(folder, len(KINDS) + 3, seed=3)


def test_every_kind_is_present_and_decodes(batch):
    folder, samples = batch
    kinds = {s.kind for s in samples}
    assert set(KINDS) <= kinds and BROKEN in kinds
    for s in samples:
        if not s.is_tiff or s.expect_failure:
            continue
        with Image.open(folder / s.relpath) as im:
            im.load()
            assert im.size == (s.width, s.height), s
            assert im.mode == EXPECTED_MODES[s.kind], s
            im.convert("RGB")


def test_special_kinds_are_what_they_claim(batch):
    folder, samples = batch
    by_kind = {s.kind: s for s in samples}
    with Image.open(folder / by_kind["tiled"].relpath) as im:
        assert 322 in im.tag_v2 and 323 in im.tag_v2  # TileWidth, TileLength
    with Image.open(folder / by_kind["multipage"].relpath) as im:
        assert im.n_frames == 3
    with Image.open(folder / by_kind["bilevel"].relpath) as im:
        assert im.info.get("compression") == "group4"
    with Image.open(folder / by_kind["rgb48"].relpath) as im:
        assert im.tag_v2[258] == (16, 16, 16)


def test_broken_and_extras(batch):
    folder, samples = batch
    broken = [s for s in samples if s.expect_failure]
    assert len(broken) == 1 and broken[0].is_tiff
    with pytest.raises((UnidentifiedImageError, OSError)), Image.open(folder / broken[0].relpath) as im:
        im.load()
    extras = [s for s in samples if not s.is_tiff]
    assert {s.relpath for s in extras} == {"notes.txt", "scans/cover.png"}


def test_deterministic(tmp_path):
    a = generate_batch(tmp_path / "a", 8, seed=11)
    b = generate_batch(tmp_path / "b", 8, seed=11)
    assert a == b
    for s in a:
        assert (tmp_path / "a" / s.relpath).read_bytes() == (tmp_path / "b" / s.relpath).read_bytes()
