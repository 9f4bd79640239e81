"Survey fields: WCS, truth positions, reproducibility, round trip and clear errors."
import numpy as np
import pytest
from astropy.io import fits

from slnb.cli import main
from slnb.field import FieldConfig, edge_taper, field_cutouts, read_field, simulate_field, write_field
from slnb.io import CubeError


@pytest.fixture(scope='module')
def fld():
    return simulate_field('LSST', 'g,r,i', size=512, seed=3, cfg=FieldConfig(scene_density=12, lens_fraction=0.3))


def test_field_has_every_kind_of_object(fld):
    kinds = set(fld.catalog['kind'])
    assert {'lens', 'faint_galaxy', 'field_star'} <= kinds and len(kinds) >= 5
    assert fld.images.shape == (3, 512, 512) and np.isfinite(fld.images).all()


def test_truth_positions_match_the_wcs_and_the_light(fld):
    ra, dec = fld.wcs.pixel_to_world_values(fld.catalog['x_pix'], fld.catalog['y_pix'])
    assert np.allclose(ra, fld.catalog['ra']) and np.allclose(dec, fld.catalog['dec'])
    # east is left: RA decreases with x
    assert fld.wcs.pixel_to_world_values(0, 256)[0] > fld.wcs.pixel_to_world_values(511, 256)[0]
    stars = fld.catalog[(fld.catalog['kind'] == 'field_star') & (fld.catalog['mag_r'] < 20)]
    for s in stars:                      # a bright star's light peaks within a pixel of its catalogue position
        c, r = int(round(s['x_pix'])), int(round(s['y_pix']))
        if 3 <= c < 509 and 3 <= r < 509:
            win = fld.images[1, r - 3:r + 4, c - 3:c + 4]
            pr, pc = np.unravel_index(np.argmax(win), win.shape)
            assert abs(pr - 3) <= 1 and abs(pc - 3) <= 1


def test_same_seed_same_field_and_round_trip(fld, tmp_path):
    again = simulate_field('LSST', 'g,r,i', size=512, seed=3, cfg=FieldConfig(scene_density=12, lens_fraction=0.3))
    assert np.array_equal(again.images, fld.images)
    back = read_field(write_field(fld, tmp_path/'f.fits'))
    assert np.array_equal(back.images, fld.images.astype(np.float32)) and back.bands == ['g', 'r', 'i']
    assert back.wcs.wcs.ctype[0] == 'RA---TAN'
    cut = field_cutouts(back)
    assert len(cut) == int(back.catalog['is_lens'].sum()) and cut.shape[1:] == (3, 64, 64)


def test_taper_is_one_inside_and_zero_at_the_edge():
    w = edge_taper(128)
    assert w[64, 64] == 1.0 and w[0, 64] < 0.01 and np.all(np.diff(w[64, :64]) >= 0)


def test_cli_field_and_its_errors(tmp_path, capsys):
    assert main(['field', '--size', '256', '--seed', '1', '-o', str(tmp_path/'f.fits')]) == 0
    with fits.open(tmp_path/'f.fits') as hl:
        assert [h.name for h in hl] == ['PRIMARY', 'G', 'R', 'I', 'CATALOG'] and hl['R'].header['CTYPE1'] == 'RA---TAN'
    assert main(['field', '--size', '64', '-o', str(tmp_path/'x.fits')]) == 2
    assert main(['field', '--survey', 'HST', '--bands', 'g', '-o', str(tmp_path/'x.fits')]) == 2
    assert main(['field', '--lens-fraction', '3', '-o', str(tmp_path/'x.fits')]) == 2
    err = capsys.readouterr().err
    assert '--size must be >= 128' in err and "unknown band 'g'" in err and 'Traceback' not in err


def test_read_field_names_the_problem(tmp_path):
    bad = tmp_path/'bad.fits'
    fits.HDUList([fits.PrimaryHDU()]).writeto(bad)
    with pytest.raises(CubeError, match='missing keyword SURVEY'): read_field(bad)
