"""Bin outlines: exact polygons, region files, and their readers (regions, DS9)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest
from astropy.io import fits
from matplotlib.path import Path as MplPath

from xmine.errors import InputError
from xmine.outlines import (
    bin_outlines,
    image_to_coords,
    outline_wkt,
    outlines_to_regions,
    read_binmap,
    rotbox_stack,
    split_holes,
    write_make_region_files,
    write_outline_regions,
)

G21 = "images/chandra_g21.5-0.9_obs1838_img.fits"
XMM = "images/xmm_a907_0201903501/0201903501_mos1_exp1-0.50-2.00keVimg.fits"


# ---------------------------------------------------------------------------
# helpers


def voronoi_map(ny: int, nx: int, nbins: int, seed: int, *, noise: float = 0.03) -> np.ndarray:
    """Nearest-seed labels plus scattered relabelled pixels: holes, islands, corner contacts."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, [nx, ny], size=(nbins, 2))
    yy, xx = np.mgrid[0:ny, 0:nx]
    d2 = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    lab = np.argmin(d2, axis=-1).astype(np.int64)
    flip = rng.random((ny, nx)) < noise
    lab[flip] = rng.integers(-1, nbins, int(flip.sum()))
    return lab


def even_odd(rings: list[np.ndarray], ny: int, nx: int) -> np.ndarray:
    """Winding sum over rings (outer +1, hole -1) at every pixel centre."""
    yy, xx = np.mgrid[1:ny + 1, 1:nx + 1]
    pts = np.c_[xx.ravel(), yy.ravel()]
    total = np.zeros(ny * nx, np.int64)
    for ring in rings:
        inside = MplPath(ring).contains_points(pts)
        total += np.where(inside, 1, 0) * (1 if _signed_area(ring) > 0 else -1)
    return total.reshape(ny, nx)


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def assert_exact(binmap: np.ndarray) -> dict:
    out = bin_outlines(binmap)
    ny, nx = binmap.shape
    assert sorted(out) == sorted(int(b) for b in np.unique(binmap) if b >= 0)
    for b, o in out.items():
        cover = even_odd([r for r, _ in o.rings], ny, nx)
        np.testing.assert_array_equal(cover, (binmap == b).astype(int), err_msg=f"bin {b}")
        assert o.npix == int((binmap == b).sum()) == o.area
        for piece in o.pieces:
            assert _signed_area(piece.outer) > 0
            assert all(_signed_area(h) < 0 for h in piece.holes)
            for ring in (piece.outer, *piece.holes):
                _assert_simple_axis_ring(ring)
    return out


def _assert_simple_axis_ring(ring: np.ndarray) -> None:
    nxt = np.roll(ring, -1, axis=0)
    prv = np.roll(ring, 1, axis=0)
    # axis-parallel edges along pixel boundaries
    assert np.all((ring[:, 0] == nxt[:, 0]) ^ (ring[:, 1] == nxt[:, 1]))
    assert np.all(np.mod(ring, 1.0) == 0.5)
    # no collinear vertex: the edge direction changes at every vertex
    d_in, d_out = ring - prv, nxt - ring
    assert np.all(d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0] != 0)
    # simple: no vertex repeated
    assert len({tuple(v) for v in ring.tolist()}) == len(ring)


def synthetic_header(ny: int = 40, nx: int = 50) -> fits.Header:
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 149.59475, -11.0876389
    h["CRPIX1"], h["CRPIX2"] = 20.5, 15.25
    h["CDELT1"], h["CDELT2"] = -0.000136667, 0.000136667
    h["RADESYS"], h["EQUINOX"] = "FK5", 2000.0
    h["LTM1_1"], h["LTM2_2"] = 0.25, 0.25
    h["LTV1"], h["LTV2"] = -1000.0 * 0.25 + 0.5, -2000.0 * 0.25 + 0.5
    return h


POLY_RE = re.compile(r"^(-?)polygon\(([^)]*)\)")


def parse_polygons(text: str) -> list[tuple[bool, list[str]]]:
    """(is_exclusion, values as text) of every polygon line."""
    out = []
    for line in text.splitlines():
        m = POLY_RE.match(line)
        if m:
            out.append((m.group(1) == "-", m.group(2).split(",")))
    return out


# ---------------------------------------------------------------------------
# bin_outlines: exactness


def test_square_with_hole_and_island():
    lab = np.full((9, 9), -1)
    lab[1:8, 1:8] = 0
    lab[3:6, 3:6] = 1
    lab[4, 4] = 0  # island of bin 0 inside bin 1 inside bin 0's hole
    out = assert_exact(lab)
    assert [len(p.holes) for p in out[0].pieces] == [1, 0]
    assert out[0].pieces[0].outer.tolist() == [[8.5, 1.5], [8.5, 8.5], [1.5, 8.5], [1.5, 1.5]]
    assert out[1].pieces[0].holes[0].shape == (4, 2)


def test_corner_contacts_are_separate_pieces():
    lab = np.array([[0, 1], [1, 0]])
    out = assert_exact(lab)
    assert len(out[0].pieces) == 2
    assert len(out[1].pieces) == 2


def test_checkerboard():
    lab = np.add.outer(np.arange(12), np.arange(15)) % 2
    out = assert_exact(lab)
    assert len(out[0].pieces) == (lab == 0).sum()


def test_hole_touching_outer_at_a_corner():
    # a C-shaped bin whose ends touch at a corner: the enclosed pocket is a hole
    # sharing one vertex with the outer ring, and both rings stay simple
    ring = np.full((5, 5), -1)
    ring[1, 1:4] = 0
    ring[2, 1] = ring[2, 3] = 0
    ring[3, 1:3] = 0  # (3,3) missing: the hole (2,2) meets the outside only at a corner
    out = assert_exact(ring)
    assert len(out[0].pieces) == 1
    assert len(out[0].pieces[0].holes) == 1


def test_border_bins_and_full_map():
    lab = np.zeros((6, 7), int)
    lab[:, 4:] = 1
    lab[0, 0] = 2
    out = assert_exact(lab)
    assert out[1].pieces[0].outer[:, 0].max() == 7.5


@pytest.mark.parametrize("seed", range(6))
def test_random_voronoi_maps(seed):
    lab = voronoi_map(37 + seed, 41, 12, seed)
    assert_exact(lab)


def test_random_noise_maps():
    rng = np.random.default_rng(5)
    for _ in range(5):
        lab = rng.integers(-1, 3, size=(17, 19))
        assert_exact(lab)


def test_unbinned_only_and_float_labels():
    assert bin_outlines(np.full((3, 3), -1)) == {}
    out = bin_outlines(np.array([[0.0, 1.0], [1.0, -1.0]]))
    assert sorted(out) == [0, 1]


def test_speed_1024_with_500_bins():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    seeds = rng.uniform(0, 1024, size=(500, 2))
    yy, xx = np.mgrid[0:1024, 0:1024]
    lab = cKDTree(seeds).query(np.c_[xx.ravel(), yy.ravel()])[1].reshape(1024, 1024)
    bin_outlines(lab[:8, :8])  # compile (cached on disk after the first run)
    t0 = time.perf_counter()
    out = bin_outlines(lab)
    dt = time.perf_counter() - t0
    assert len(out) == 500
    assert sum(o.npix for o in out.values()) == 1024 * 1024
    assert dt < 1.0, f"bin_outlines took {dt:.2f} s on 1024² with 500 bins"


@pytest.mark.parametrize("seed", range(4))
def test_split_holes_gives_simple_polygons_covering_the_bin(seed):
    lab = voronoi_map(30, 33, 6, seed, noise=0.08)
    n_holes = 0
    for b, o in bin_outlines(lab).items():
        n_holes += sum(len(p.holes) for p in o.pieces)
        split = split_holes(o)
        assert split.npix == o.npix
        assert all(not p.holes for p in split.pieces)
        cover = even_odd([p.outer for p in split.pieces], *lab.shape)
        np.testing.assert_array_equal(cover, (lab == b).astype(int))
        for p in split.pieces:
            _assert_simple_axis_ring(p.outer)
    assert n_holes > 0


def test_split_holes_island_in_hole(tmp_path):
    lab = np.full((9, 9), -1)
    lab[1:8, 1:8] = 0
    lab[3:6, 3:6] = 1
    lab[4, 4] = 0
    files = write_outline_regions(lab, out_dir=tmp_path, coords=["image"], holes="split", per_bin=False)
    polys = parse_polygons(files[0].read_text())
    assert not any(excl for excl, _ in polys)
    # without asking, only the bin whose piece sits in its own hole is cut
    files = write_outline_regions(lab, out_dir=tmp_path / "x", coords=["image"], combined=False)
    assert [e for e, _ in parse_polygons(files[0].read_text())] == [False, False, False]
    assert [e for e, _ in parse_polygons(files[1].read_text())] == [False, True]
    with pytest.raises(InputError, match="hole style"):
        write_outline_regions(lab, out_dir=tmp_path, coords=["image"], holes="keep")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(("value", "match"), [
    (np.zeros(5, int), "2-D"),
    (np.zeros((2, 2, 2), int), "2-D"),
    (np.array([[0, -2]]), r"found -2 at pixel x=2, y=1"),
    (np.array([[0.5, 1.0]]), r"must be integers, found 0\.5"),
    (np.array([[np.nan, 1.0]]), "must be integers"),
    (np.array([["a"]]), "dtype"),
])
def test_bad_binmaps(value, match):
    with pytest.raises(InputError, match=match):
        bin_outlines(value)


def test_unreadable_fits(tmp_path):
    bad = tmp_path / "binmap.fits"
    bad.write_text("not a FITS file")
    with pytest.raises(InputError, match=r"binmap\.fits"):
        read_binmap(bad)
    with pytest.raises(InputError, match=r"nothing\.fits"):
        write_outline_regions(tmp_path / "nothing.fits", out_dir=tmp_path)


def test_missing_keywords(tmp_path):
    lab = np.zeros((3, 3), int)
    bare = fits.Header()
    with pytest.raises(InputError, match="LTM1_1/LTM2_2/LTV1/LTV2"):
        write_outline_regions(lab, out_dir=tmp_path, header=bare, coords=["physical"])
    with pytest.raises(InputError, match="no celestial WCS"):
        write_outline_regions(lab, out_dir=tmp_path, header=bare, coords=["fk5"])
    with pytest.raises(InputError, match="header"):
        write_outline_regions(lab, out_dir=tmp_path, coords=["fk5"])
    with pytest.raises(InputError, match="no image coordinates"):
        write_outline_regions(lab, out_dir=tmp_path, coords=["image"], style="ciao")
    with pytest.raises(InputError, match="unknown coordinate system"):
        write_outline_regions(lab, out_dir=tmp_path, coords=["galactic"])
    with pytest.raises(InputError, match="unknown region style"):
        write_outline_regions(lab, out_dir=tmp_path, coords=["image"], style="funtools")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------
# coordinates


def test_physical_and_sky_synthetic():
    from astropy.wcs import WCS

    h = synthetic_header()
    x, y = np.array([0.5, 10.5, 50.5]), np.array([0.5, 3.5, 40.5])
    px, py = image_to_coords(x, y, coords="physical", header=h)
    np.testing.assert_allclose(px, 1000.0 + (x - 0.5) * 4.0)
    np.testing.assert_allclose(py, 2000.0 + (y - 0.5) * 4.0)
    ra, dec = image_to_coords(x, y, coords="fk5", header=h)
    sky = WCS(h).pixel_to_world(x - 1, y - 1)
    assert np.all(sky.separation(_sky(ra, dec, "fk5")).arcsec < 1e-6)


def _sky(ra, dec, frame):
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra, dec, unit="deg", frame=frame)


@pytest.mark.shared_data
def test_real_chandra_header(shared_data, tmp_path):
    from astropy.wcs import WCS, FITSFixedWarning

    h = fits.getheader(shared_data / G21)
    # the pixel the data README quotes: image (136, 116) → physical (4069.5, 4250.5)
    px, py = image_to_coords(np.array([136.0]), np.array([116.0]), coords="physical", header=h)
    assert (px[0], py[0]) == (4069.5, 4250.5)
    lab = voronoi_map(h["NAXIS2"], h["NAXIS1"], 30, 3, noise=0.002)
    out = bin_outlines(lab)
    with pytest.warns(FITSFixedWarning):
        wcs = WCS(h)
    verts = np.concatenate([ring for o in out.values() for ring, _ in o.rings])
    for coords, frame in (("fk5", "fk5"), ("icrs", "icrs")):
        ra, dec = image_to_coords(verts[:, 0], verts[:, 1], coords=coords, header=h)
        truth = wcs.pixel_to_world(verts[:, 0] - 1, verts[:, 1] - 1).transform_to(frame)
        assert np.max(truth.separation(_sky(ra, dec, frame)).arcsec) < 0.01
    # the written sexagesimal file agrees with astropy too
    files = write_outline_regions(lab, out_dir=tmp_path, header=h, coords=["fk5_hms", "physical"],
                                  per_bin=False)
    hms = next(f for f in files if f.name.endswith("fk5_hms.reg"))
    from regions import Regions

    regs = Regions.read(hms, format="ds9")
    first = next(iter(out.values())).pieces[0].outer
    truth = wcs.pixel_to_world(first[:, 0] - 1, first[:, 1] - 1).transform_to("fk5")
    assert np.max(truth.separation(regs[0].vertices).arcsec) < 0.01


@pytest.mark.shared_data
def test_real_xmm_header_physical(shared_data):
    h = fits.getheader(shared_data / XMM)
    # XMM images also carry the alternate linear WCS 'L': X = CRVAL1L + CDELT1L * (i - CRPIX1L)
    i = np.array([1.0, 256.5, 512.0])
    px, _ = image_to_coords(i, i, coords="physical", header=h)
    np.testing.assert_allclose(px, h["CRVAL1L"] + h["CDELT1L"] * (i - h["CRPIX1L"]), rtol=0, atol=1e-6)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", [G21, XMM])
def test_physical_from_alternate_wcs_when_ltm_ltv_absent(shared_data, name):
    h = fits.getheader(shared_data / name)
    x, y = np.array([0.5, 136.0, 200.25]), np.array([0.5, 116.0, 17.0])
    want = image_to_coords(x, y, coords="physical", header=h)
    for k in ("LTM1_1", "LTM1_2", "LTM2_1", "LTM2_2", "LTV1", "LTV2"):
        h.remove(k, ignore_missing=True)
    got = image_to_coords(x, y, coords="physical", header=h)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# region files


def test_ds9_files_roundtrip_with_regions(tmp_path):
    from regions import PolygonPixelRegion, PolygonSkyRegion, Regions

    h = synthetic_header()
    lab = voronoi_map(40, 50, 9, 11)
    out = bin_outlines(lab)
    files = write_outline_regions(lab, out_dir=tmp_path, header=h, coords=["image", "fk5", "icrs"])
    assert (tmp_path / "image" / "xaf_0.reg").exists()
    assert (tmp_path / "xaf_bins_fk5.reg").exists()
    assert len(files) == 3 * (len(out) + 1)
    for f in files:
        regs = Regions.read(f, format="ds9")
        coords = f.parent.name if f.parent != tmp_path else f.stem.split("_bins_")[1]
        bins = [int(f.stem.split("_")[1])] if f.parent != tmp_path else sorted(out)
        expected = [(o.bin_id, ring, hole) for b in bins for o in [out[b]] for ring, hole in o.rings]
        assert len(regs) == len(expected)
        for reg, (b, ring, hole) in zip(regs, expected, strict=True):
            assert reg.meta["include"] == (not hole)
            assert reg.meta["tag"] == [f"bin {b}"]
            if coords == "image":
                assert isinstance(reg, PolygonPixelRegion)
                np.testing.assert_array_equal(reg.vertices.x + 1, ring[:, 0])
                np.testing.assert_array_equal(reg.vertices.y + 1, ring[:, 1])
            else:
                assert isinstance(reg, PolygonSkyRegion)
                ra, dec = image_to_coords(ring[:, 0], ring[:, 1], coords=coords, header=h)
                np.testing.assert_array_equal(reg.vertices.ra.deg, ra)  # full precision
                np.testing.assert_array_equal(reg.vertices.dec.deg, dec)


def test_regions_masks_give_the_bins(tmp_path):
    """regions' own rasteriser (centre mode) turns the polygons back into the bins."""
    lab = voronoi_map(30, 35, 7, 4)
    out = bin_outlines(lab)
    regs = outlines_to_regions(out)
    ny, nx = lab.shape
    got = {b: np.zeros((ny, nx), int) for b in out}
    for reg in regs:
        b = int(reg.meta["tag"][0].split()[1])
        mask = reg.to_mask(mode="center").to_image((ny, nx))
        got[b] += (1 if reg.meta["include"] else -1) * mask.astype(int)
    for b in out:
        np.testing.assert_array_equal(got[b], (lab == b).astype(int))
    # physical pixel regions keep the physical values; sky regions carry the frame
    h = synthetic_header()
    phys = outlines_to_regions([out[0]], header=h, coords="physical")
    np.testing.assert_allclose(phys[0].vertices.x, 1000.0 + (out[0].pieces[0].outer[:, 0] - 0.5) * 4.0)
    sky = outlines_to_regions(out, header=h, coords="icrs")
    assert sky[0].vertices.frame.name == "icrs"
    assert len(sky) == len(regs)


def test_per_bin_files_read_the_same_globally_and_in_order(tmp_path):
    """Each per-bin file gives its bin whether exclusions apply to all shapes (DS9, funtools) or in order (CIAO)."""
    from regions import Regions

    lab = voronoi_map(24, 26, 4, 8, noise=0.15)
    ny, nx = lab.shape
    files = write_outline_regions(lab, out_dir=tmp_path, coords=["image"], combined=False)
    for f in files:
        b = int(f.stem.split("_")[1])
        regs = Regions.read(f, format="ds9")
        masks = [(r.meta["include"], r.to_mask(mode="center").to_image((ny, nx)).astype(bool)) for r in regs]
        inc = np.any([m for i, m in masks if i], axis=0)
        exc = np.any([m for i, m in masks if not i] or [np.zeros((ny, nx), bool)], axis=0)
        np.testing.assert_array_equal(inc & ~exc, lab == b)
        ordered = np.zeros((ny, nx), bool)
        for i, m in masks:
            ordered = (ordered | m) if i else (ordered & ~m)
        np.testing.assert_array_equal(ordered, lab == b)


def test_physical_and_ciao_files(tmp_path):
    h = synthetic_header()
    lab = np.full((40, 50), -1)
    lab[5:15, 5:20] = 0
    lab[8:10, 8:10] = 1
    files = write_outline_regions(lab, out_dir=tmp_path, header=h, coords=["physical", "fk5", "fk5_hms"],
                                  style="ciao")
    text = (tmp_path / "physical" / "xaf_0.reg").read_text()
    assert text.startswith("# Region file format: CIAO version 1.0\n")
    assert "physical;" not in text
    assert "global" not in text
    polys = parse_polygons(text)
    assert [p[0] for p in polys] == [False, True]
    # LTM 0.25, origin 1000/2000: image 5.5 → physical 1000 + 5 * 4
    assert polys[0][1][:2] == ["1080.0", "2020.0"]
    deg = parse_polygons((tmp_path / "fk5" / "xaf_0.reg").read_text())
    assert all(v.endswith("d") for v in deg[0][1])
    hms = parse_polygons((tmp_path / "fk5_hms" / "xaf_0.reg").read_text())
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{5}", hms[0][1][0])
    assert re.fullmatch(r"[+-]\d\d:\d\d:\d\d\.\d{4}", hms[0][1][1])
    # regions parses the CIAO physical file once it is told a frame
    from regions import Regions

    regs = Regions.parse("image\n" + text, format="ds9")
    assert [r.meta["include"] for r in regs] == [1, 0]
    assert len(files) == 3 * 3


def test_wkt():
    lab = np.full((6, 6), -1)
    lab[1:5, 1:5] = 0
    lab[2, 2] = -1
    lab[5, 5] = 0
    out = bin_outlines(lab)
    wkt = outline_wkt(out[0])
    assert wkt.startswith("MULTIPOLYGON (((")
    assert "(2.5 4.5, 2.5 5.5, 3.5 5.5, 3.5 4.5, 2.5 4.5)" not in wkt
    lab[5, 5] = -1
    wkt = outline_wkt(bin_outlines(lab)[0])
    assert wkt == ("POLYGON ((5.5 1.5, 5.5 5.5, 1.5 5.5, 1.5 1.5, 5.5 1.5), "
                   "(2.5 2.5, 2.5 3.5, 3.5 3.5, 3.5 2.5, 2.5 2.5))")


def test_wkt_sky_orientation():
    h = synthetic_header()  # RA runs opposite to x
    lab = np.full((6, 6), -1)
    lab[1:5, 1:5] = 0
    lab[2, 2] = -1
    wkt = outline_wkt(bin_outlines(lab)[0], header=h, coords="fk5")
    rings = [np.array([[float(v) for v in pair.split()] for pair in ring.split(", ")])
             for ring in re.findall(r"\(([^()]+)\)", wkt)]
    assert len(rings) == 2
    assert _signed_area(rings[0][:-1]) > 0
    assert _signed_area(rings[1][:-1]) < 0
    np.testing.assert_array_equal(rings[0][0], rings[0][-1])


def test_binmap_file_uses_its_header(tmp_path):
    h = synthetic_header()
    lab = voronoi_map(40, 50, 5, 2)
    path = tmp_path / "binmap.fits"
    fits.writeto(path, lab.astype(np.int32), h)
    files = write_outline_regions(path, out_dir=tmp_path / "out", coords=["physical"], per_bin=False)
    text = files[0].read_text()
    assert "binmap.fits" in text.splitlines()[1]
    assert text.splitlines()[3] == "physical"


# ---------------------------------------------------------------------------
# make_region_files compatibility


def test_rotbox_stack_covers_bins_exactly():
    lab = voronoi_map(25, 30, 6, 9)
    for b, boxes in rotbox_stack(lab).items():
        cover = np.zeros_like(lab)
        for x0, y0, w, h in boxes:
            cover[y0:y0 + h, x0:x0 + w] += 1
        np.testing.assert_array_equal(cover, (lab == b).astype(int))


def test_make_region_files_format(tmp_path):
    lab = np.full((4, 5), -1)
    lab[0:2, 0:3] = 0
    lab[2, 0] = 0
    lab[3, 4] = 1
    h = synthetic_header()
    files = write_outline_regions(lab, out_dir=tmp_path, header=h, style="make_region_files")
    assert [f.name for f in files] == ["xaf_0.reg", "xaf_1.reg"]
    # minx = 1000, miny = 2000, bin = 4 from LTM/LTV
    assert files[0].read_text() == ("# Region file format: CIAO version 1.0\n"
                                    "rotbox(1006,2004,12,8,0)\n"
                                    "rotbox(1002,2010,4,4,0)\n")
    # contbin's defaults without physical keywords, and six significant digits
    files = write_make_region_files(lab, out_dir=tmp_path / "d", minx=3798.123456, miny=0, binning=1)
    assert files[1].read_text().splitlines()[1] == "rotbox(3802.62,3.5,1,1,0)"


def test_make_region_files_matches_contbin(tmp_path):
    """Byte-for-byte against contbin's own tool when it is built (set XMINE_CONTBIN_DIR)."""
    exe = shutil.which("make_region_files", path=os.environ.get("XMINE_CONTBIN_DIR"))
    if exe is None:
        pytest.skip("contbin's make_region_files not found; build it and set XMINE_CONTBIN_DIR")
    lab = voronoi_map(40, 45, 8, 21)
    binmap = tmp_path / "binmap.fits"
    fits.writeto(binmap, lab.astype(np.int32))
    ref = tmp_path / "ref"
    ref.mkdir()
    subprocess.run([exe, "--minx=3798.5", "--miny=4019.5", "--bin=2", f"--outdir={ref}", str(binmap)],
                   check=True, capture_output=True, timeout=60)
    ours = write_make_region_files(lab, out_dir=tmp_path / "ours", minx=3798.5, miny=4019.5, binning=2)
    assert sorted(p.name for p in ref.iterdir()) == sorted(p.name for p in ours)
    for p in ours:
        assert p.read_text() == (ref / p.name).read_text(), p.name


# ---------------------------------------------------------------------------
# DS9


def _ds9_available() -> bool:
    return shutil.which("ds9") is not None and shutil.which("xvfb-run") is not None


@pytest.mark.ds9
@pytest.mark.slow
def test_ds9_loads_the_files(tmp_path):
    """DS9 (Debian saods9, under xvfb-run) loads DS9 and CIAO files; its own save gives our vertices."""
    if not _ds9_available():
        pytest.skip("ds9 or xvfb-run not on PATH (apt-get install saods9 xvfb xauth)")
    h = synthetic_header()
    lab = np.full((40, 50), -1)
    lab[5:15, 5:20] = 0
    lab[8:10, 8:10] = 1
    lab[20:30, 30:45] = 2
    lab[24:26, 36:38] = -1  # a hole with nothing in it
    lab[30, 45] = 2  # a second piece touching the first at a corner
    image = tmp_path / "binmap.fits"
    fits.writeto(image, lab.astype(np.int32), h)
    ds9_files = write_outline_regions(image, out_dir=tmp_path / "ds9", coords=["physical", "fk5", "fk5_hms"],
                                      per_bin=False)
    ciao_files = write_outline_regions(image, out_dir=tmp_path / "ciao", coords=["physical", "fk5", "fk5_hms"],
                                       per_bin=False, style="ciao")
    expected = parse_polygons(ds9_files[0].read_text())
    # one DS9 run loads all six files in turn and saves what it holds, in physical coordinates
    saved = tmp_path / "saved.reg"
    cmd = ["xvfb-run", "-a", "ds9", str(image)]
    for f, fmt in [*((f, "ds9") for f in ds9_files), *((f, "ciao") for f in ciao_files)]:
        cmd += ["-regions", "format", fmt, "-regions", "load", str(f)]
    cmd += ["-regions", "format", "ds9", "-regions", "system", "physical", "-regions", "save", str(saved), "-exit"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    got = parse_polygons(saved.read_text())
    assert len(got) == 6 * len(expected)
    for k, (g, e) in enumerate(zip(got, expected * 6, strict=True)):
        assert g[0] == e[0], k
        # DS9 prints 8 significant digits; sky round trips agree to far better than 0.01 pixel
        np.testing.assert_allclose(np.array(g[1], float), np.array(e[1], float), rtol=0, atol=1e-3,
                                   err_msg=f"polygon {k}")
    assert elapsed < 60
