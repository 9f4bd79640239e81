"The cutout cube and catalogues: round trips, and every bad input of SPEC section 3 with its clear error."
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slnb.core import PARAM_NAMES
from slnb.io import (CATALOG_KINDS, Cube, CubeError, make_cube, read_catalog, read_cube, rescale_to_zero_point,
                     validate_cube, write_catalog, write_cube)


def test_round_trip_keeps_everything(cube, cube_file):
    back = read_cube(cube_file)
    assert np.array_equal(back.images, cube.images) and back.images.dtype == np.float32
    assert (back.survey, back.bands, back.pixel_scale) == ('LSST', ['g', 'r', 'i'], 0.2)
    assert back.zero_points == {'g': 28.30, 'r': 28.13, 'i': 27.79}
    assert sorted(back.extensions) == ['MASK', 'PSF', 'VARIANCE']
    assert back.extensions['MASK'].dtype == np.uint8
    assert list(back.catalog['id']) == list(cube.catalog['id'])
    assert np.allclose(back.catalog['theta_E'], cube.catalog['theta_E'], equal_nan=True)
    with fits.open(cube_file) as hl:
        h = hl[0].header
        assert h['BUNIT'] == 'electron/s' and h['BANDS'] == 'g,r,i' and h['ZP_G'] == 28.30
        assert all(len(k) <= 8 for k in h)


def test_extra_header_keywords_round_trip(cube, tmp_path):
    cube.header.update({'PSF_G': 0.77, 'SUPERSMP': 3})
    back = read_cube(write_cube(cube, tmp_path/'c.fits'))
    assert back.header['PSF_G'] == 0.77 and back.header['SUPERSMP'] == 3


def test_coordinates_follow_the_spec(cube):
    x, y = cube.coordinates()
    assert x.shape == (25, 25) and x[0, 12] == 0.0 and y[12, 0] == 0.0
    assert x[0, -1] == pytest.approx(12 * 0.2) and y[-1, 0] == pytest.approx(12 * 0.2)


def test_no_overwrite_unless_asked(cube, cube_file):
    with pytest.raises(FileExistsError, match='exists'):
        write_cube(cube, cube_file)
    write_cube(cube, cube_file, overwrite=True)


def expect(path, hdu, rule, fn=None):
    "Reading `path` (or calling fn) raises a CubeError that names the file, the HDU and the rule."
    with pytest.raises(CubeError) as e:
        (fn or (lambda: read_cube(path)))()
    msg = str(e.value)
    assert str(path) in msg and f'[HDU {hdu}]' in msg and rule in msg, msg
    return msg


def rewrite(src, dst, edit):
    "Copy a FITS file with `edit(hdulist)` applied, bypassing slnb's own validation."
    with fits.open(src) as hl:
        for h in hl:                         # as a foreign writer would: no (stale) checksums
            for key in ('CHECKSUM', 'DATASUM'):
                h.header.remove(key, ignore_missing=True)
        edit(hl)
        hl.writeto(dst, output_verify='silentfix')
    return dst


def test_truncated_file(cube_file, tmp_path):
    bad = tmp_path/'truncated.fits'
    bad.write_bytes(cube_file.read_bytes()[:-4000])
    expect(bad, '-', 'truncated or corrupt FITS file')
    whole_blocks = tmp_path/'truncated_blocks.fits'
    whole_blocks.write_bytes(cube_file.read_bytes()[:2880 * 3])
    expect(whole_blocks, '-', 'truncated or corrupt FITS file')


def test_corrupt_bytes_caught_by_checksum(cube_file, tmp_path):
    data = bytearray(cube_file.read_bytes())
    data[2880 + 100:2880 + 140] = b'\x7f' * 40        # inside the primary data unit
    bad = tmp_path/'corrupt.fits'
    bad.write_bytes(bytes(data))
    expect(bad, 'PRIMARY', 'corrupt FITS file (checksum mismatch)')


def test_not_fits_and_empty_and_missing(tmp_path):
    (tmp_path/'text.fits').write_text('SIMPLE? no, a text file')
    expect(tmp_path/'text.fits', '-', 'not a FITS file')
    (tmp_path/'empty.fits').write_bytes(b'')
    expect(tmp_path/'empty.fits', '-', 'not a FITS file')
    expect(tmp_path/'missing.fits', '-', 'file not found')


def test_wrong_number_of_dimensions(cube_file, tmp_path):
    bad = rewrite(cube_file, tmp_path/'3d.fits', lambda hl: setattr(hl[0], 'data', hl[0].data[:, 0]))
    msg = expect(bad, 'PRIMARY', 'image array must have 4 dimensions (N, B, H, W)')
    assert '(6, 25, 25)' in msg


def test_no_primary_data(cube_file, tmp_path):
    bad = rewrite(cube_file, tmp_path/'nodata.fits', lambda hl: setattr(hl[0], 'data', None))
    expect(bad, 'PRIMARY', 'primary HDU must hold the image array')


def test_integer_images(cube_file, tmp_path):
    bad = rewrite(cube_file, tmp_path/'int.fits', lambda hl: setattr(hl[0], 'data', hl[0].data.astype(np.int16)))
    expect(bad, 'PRIMARY', 'image array must be floating point')


def test_nans_name_where(cube_file, tmp_path):
    def edit(hl):
        d = hl[0].data.copy(); d[4, 2, 7, 9] = np.nan; d[5, 0, 0, 0] = np.inf; hl[0].data = d
    msg = expect(rewrite(cube_file, tmp_path/'nan.fits', edit), 'PRIMARY', 'values must be finite')
    assert '2 NaN/inf pixels' in msg and '(4, 2, 7, 9)' in msg


@pytest.mark.parametrize('key', ['SURVEY', 'BANDS', 'PIXSCALE', 'BUNIT', 'ZP_R'])
def test_missing_keyword(cube_file, tmp_path, key):
    bad = rewrite(cube_file, tmp_path/f'no_{key}.fits', lambda hl: hl[0].header.remove(key))
    expect(bad, 'PRIMARY', f'missing keyword {key}')


def test_wrong_bunit_and_pixscale(cube_file, tmp_path):
    expect(rewrite(cube_file, tmp_path/'adu.fits', lambda hl: hl[0].header.set('BUNIT', 'ADU')),
           'PRIMARY', "BUNIT must be 'electron/s'")
    expect(rewrite(cube_file, tmp_path/'pix.fits', lambda hl: hl[0].header.set('PIXSCALE', -0.2)),
           'PRIMARY', 'PIXSCALE must be a positive number')
    expect(rewrite(cube_file, tmp_path/'pixs.fits', lambda hl: hl[0].header.set('PIXSCALE', 'small')),
           'PRIMARY', 'PIXSCALE must be a positive number')


def test_unknown_survey(cube_file, tmp_path):
    msg = expect(rewrite(cube_file, tmp_path/'s.fits', lambda hl: hl[0].header.set('SURVEY', 'LSTT')),
                 'PRIMARY', 'SURVEY must be a known survey')
    assert "did you mean 'LSST'" in msg


def test_unknown_band_and_band_count(cube_file, tmp_path):
    def edit(hl): hl[0].header['BANDS'] = 'g,r,q'; hl[0].header['ZP_Q'] = 27.0
    msg = expect(rewrite(cube_file, tmp_path/'q.fits', edit), 'PRIMARY', 'BANDS must be bands of SURVEY')
    assert "unknown band 'q'" in msg
    msg = expect(rewrite(cube_file, tmp_path/'n.fits', lambda hl: hl[0].header.set('BANDS', 'g,r')),
                 'PRIMARY', 'BANDS must list one band per image plane')
    assert 'B=3' in msg


def test_catalog_wrong_length(cube_file, tmp_path):
    def edit(hl): hl['CATALOG'] = fits.BinTableHDU(Table(hl['CATALOG'].data)[:4], name='CATALOG')
    msg = expect(rewrite(cube_file, tmp_path/'cat.fits', edit), 'CATALOG', 'CATALOG must have one row per cutout')
    assert '4 rows for N=6' in msg


def test_catalog_missing_and_bad_ids(cube_file, tmp_path):
    expect(rewrite(cube_file, tmp_path/'nocat.fits', lambda hl: hl.pop(1)), 'CATALOG', 'a CATALOG binary table')

    def dup(hl):
        t = Table(hl['CATALOG'].data); t['id'][1] = t['id'][0]
        hl['CATALOG'] = fits.BinTableHDU(t, name='CATALOG')
    expect(rewrite(cube_file, tmp_path/'dup.fits', dup), 'CATALOG', "'id' values must be unique")

    def floats(hl):
        t = Table(hl['CATALOG'].data); t['id'] = t['id'].astype(float)
        hl['CATALOG'] = fits.BinTableHDU(t, name='CATALOG')
    expect(rewrite(cube_file, tmp_path/'fid.fits', floats), 'CATALOG', "'id' must be an integer column")


def test_lens_truth_must_be_finite(cube, tmp_path):
    cube.catalog['theta_E'][0] = np.nan          # row 0 is a lens
    expect(tmp_path/'t.fits', 'CATALOG', "truth column 'theta_E' must be finite",
           fn=lambda: write_cube(cube, tmp_path/'t.fits'))
    assert not (tmp_path/'t.fits').exists()


def test_extension_rules(cube, tmp_path):
    p = tmp_path/'x.fits'
    cube.extensions['VARIANCE'] = cube.extensions['VARIANCE'][:, :2]
    expect(p, 'VARIANCE', 'must have the shape of the primary array', fn=lambda: write_cube(cube, p))
    cube.extensions['VARIANCE'] = -np.ones(cube.images.shape, np.float32)
    expect(p, 'VARIANCE', 'variance must be >= 0', fn=lambda: write_cube(cube, p))
    del cube.extensions['VARIANCE']
    cube.extensions['PSF'] = cube.extensions['PSF'] * 2
    expect(p, 'PSF', 'each PSF kernel must be normalised to sum 1', fn=lambda: write_cube(cube, p))
    cube.extensions['PSF'] = cube.extensions['PSF'][:2] / 2
    expect(p, 'PSF', 'PSF must have shape (B, h, w)', fn=lambda: write_cube(cube, p))
    del cube.extensions['PSF']
    cube.extensions['MASK'] = cube.extensions['MASK'].astype(np.int32)
    expect(p, 'MASK', 'MASK must be uint8', fn=lambda: write_cube(cube, p))


def test_stage_extensions_validated_on_read(cube_file, tmp_path):
    def edit(hl):
        d = np.zeros(hl[0].data.shape, np.float32); d[0, 0, 0, 0] = np.nan
        hl.append(fits.ImageHDU(d, name='DENOISED'))
    expect(rewrite(cube_file, tmp_path/'den.fits', edit), 'DENOISED', 'values must be finite')


def test_long_header_keyword_refused(cube, tmp_path):
    cube.header['TOOLONGKEY'] = 1
    expect('<in memory>', 'PRIMARY', 'header keywords keep to 8 characters',
           fn=lambda: write_cube(cube, tmp_path/'k.fits'))


def test_make_cube_needs_known_survey_and_bands():
    from slnb.surveys import UnknownSurveyError
    with pytest.raises(UnknownSurveyError):
        make_cube(np.zeros((1, 1, 5, 5)), 'NOPE', 'g')
    with pytest.raises(UnknownSurveyError, match="unknown band 'VIS' for survey LSST"):
        make_cube(np.zeros((1, 1, 5, 5)), 'LSST', 'VIS')


# --- catalogues (SPEC section 4) ---

def full_table(kind, n=5):
    rng = np.random.default_rng(0)
    t = Table({c: rng.uniform(0.1, 0.9, n) for c in CATALOG_KINDS[kind]})
    t['id'] = np.arange(n)
    if kind == 'fitting':
        t['converged'] = np.ones(n, bool); t['n_steps'] = np.full(n, 1000)
    return t


@pytest.mark.parametrize('kind', list(CATALOG_KINDS))
def test_catalog_round_trip_with_provenance(tmp_path, kind):
    p = write_catalog(full_table(kind), tmp_path/f'{kind}.ecsv', kind, weights='w-1', parameters={'seed': 3})
    t = read_catalog(p)
    assert t.meta['kind'] == kind and t.meta['weights'] == 'w-1' and t.meta['parameters'] == {'seed': 3}
    assert 'slnb_version' in t.meta and len(t) == 5


def test_bad_catalogues(tmp_path):
    t = full_table('prediction'); del t['theta_E_std']
    expect(tmp_path/'p.ecsv', 'ECSV', 'needs the columns theta_E_std',
           fn=lambda: write_catalog(t, tmp_path/'p.ecsv', 'prediction'))
    t = full_table('prediction'); t['e1_std'][2] = -1
    expect(tmp_path/'p.ecsv', 'ECSV', '<name>_std must be >= 0', fn=lambda: write_catalog(t, tmp_path/'p.ecsv', 'prediction'))
    t = full_table('detection'); t['p_lens'][0] = np.nan
    expect(tmp_path/'d.ecsv', 'ECSV', "column 'p_lens' has NaN", fn=lambda: write_catalog(t, tmp_path/'d.ecsv', 'detection'))
    (tmp_path/'junk.ecsv').write_text('# %ECSV 1.0\nnot really')
    expect(tmp_path/'junk.ecsv', 'ECSV', 'not a readable ECSV table', fn=lambda: read_catalog(tmp_path/'junk.ecsv'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['junk.ecsv']      # nothing half-written


def test_real_euclid_lens_as_a_cube(real_data, tmp_path):
    "A real Euclid Q1 VIS cutout becomes a valid cube whose flux is conserved by the unit change."
    src = real_data/'euclid_q1'/'EUCLJ174517.55+655612.5'/'EUCLJ174517.55+655612.5.fits'
    with fits.open(src) as hl:
        flux, psf, zp_in = hl['VIS_FLUX'].data.astype(float), hl['VIS_PSF'].data, hl['VIS_FLUX'].header['MAGZERO']
    from slnb.surveys import get_survey
    zp = get_survey('Euclid').band('VIS').zero_point
    img = rescale_to_zero_point(flux, zp_in, zp)
    cube = make_cube(img[None, None], 'Euclid', 'VIS', pixel_scale=0.1, PSF=(psf / psf.sum())[None])
    back = read_cube(write_cube(cube, tmp_path/'euclid.fits'))
    # the same total flux, as a magnitude, in either unit system
    m_in = zp_in - 2.5 * np.log10(flux.sum())
    m_out = zp - 2.5 * np.log10(back.images.astype(float).sum())
    assert m_out == pytest.approx(m_in, abs=1e-5)
