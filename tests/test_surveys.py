"The survey registry: lenstronomy agreement value by value, CSST sources, noise, PSFs, user surveys."
import math

import numpy as np
import pytest
from lenstronomy.SimulationAPI.ObservationConfig.DES import DES
from lenstronomy.SimulationAPI.ObservationConfig.Euclid import Euclid
from lenstronomy.SimulationAPI.ObservationConfig.HST import HST
from lenstronomy.SimulationAPI.ObservationConfig.LSST import LSST
from lenstronomy.SimulationAPI.observation_api import SingleBand
from lenstronomy.Util import data_util, kernel_util

from slnb.core import SettingsError
from slnb.surveys import (CSST_FWHM, FWHM_TO_SIGMA, PSFError, UnknownSurveyError, check_kernel, cps_to_mag,
                          gaussian_kernel, get_survey, list_surveys, load_survey_file, load_user_surveys,
                          mag_to_cps, moffat_kernel, pixel_kernel_from_fits, render_example_lens)

LENSTRONOMY = [('LSST', b, LSST(band=b).kwargs_single_band()) for b in 'ugrizy'] + \
              [('DES', b, DES(band=b).kwargs_single_band()) for b in 'grizY'] + \
              [('Euclid', 'VIS', Euclid(band='VIS').kwargs_single_band()),
               ('HST', 'F160W', HST(band='WFC3_F160W', psf_type='GAUSSIAN').kwargs_single_band())]


@pytest.mark.parametrize('survey, band, expected', LENSTRONOMY, ids=[f'{s}-{b}' for s, b, _ in LENSTRONOMY])
def test_equal_to_lenstronomy_value_by_value(survey, band, expected):
    ours = get_survey(survey).band(band).kwargs_single_band()
    for key, value in expected.items():
        assert ours[key] == value, f'{survey} {band} {key}: {ours[key]} != lenstronomy {value}'


def test_every_spec_survey_is_registered():
    assert {'LSST', 'CSST', 'Euclid', 'HST', 'DES'} <= set(list_surveys())
    assert get_survey('lsst').band_names == list('ugrizy')
    assert get_survey('CSST').band_names == ['NUV', 'u', 'g', 'r', 'i', 'z', 'y']
    assert get_survey('Euclid').band('VIS').pixel_scale == 0.101
    assert get_survey('DES').band('g').pixel_scale == 0.263


def test_csst_numbers_are_cited_and_consistent():
    keys = ('pixel_scale', 'zero_point', 'sky_brightness', 'exposure_time', 'num_exposures', 'read_noise',
            'ccd_gain', 'psf_fwhm')
    for b in get_survey('CSST').bands.values():
        assert b.pixel_scale == 0.074 and b.exposure_time == 150.0
        assert all(b.sources.get(k) for k in keys), b.name
        assert b.num_exposures == (4 if b.name in ('NUV', 'y') else 2)
    # Gaussian with 80% of the energy within 0.15": r80 = sigma sqrt(2 ln 5)
    assert CSST_FWHM * FWHM_TO_SIGMA * math.sqrt(2 * math.log(5)) == pytest.approx(0.15)


def test_mag_cps_round_trip_and_lenstronomy():
    m = np.array([18.0, 22.3, 26.1])
    assert np.allclose(mag_to_cps(m, 27.5), [data_util.magnitude2cps(x, 27.5) for x in m])
    assert np.allclose(cps_to_mag(mag_to_cps(m, 25.0), 25.0), m)
    assert get_survey('LSST').band('r').mag_to_cps(28.13) == pytest.approx(1.0)


@pytest.mark.parametrize('survey', ['LSST', 'CSST', 'Euclid', 'DES', 'HST'])
def test_background_noise_matches_lenstronomy(survey):
    for b in get_survey(survey).bands.values():
        sb = SingleBand(**b.kwargs_single_band())
        assert b.background_sigma == pytest.approx(sb.background_noise, rel=1e-12)
        assert b.noise_sigma(np.array([[0.0, 5.0]])) == pytest.approx(sb.estimate_noise(np.array([[0.0, 5.0]])), rel=1e-12)


def test_poisson_noise_statistics_and_flux_conservation():
    band = get_survey('CSST').band('g')
    model = np.full((64, 100, 100), 0.8)          # a batch of 64 flat images, 0.8 e/s per pixel
    noisy = band.add_noise(model, rng=3)
    sig = band.noise_sigma(model)[0, 0, 0]
    assert noisy.shape == model.shape
    assert abs(noisy.mean() - 0.8) < 5 * sig / math.sqrt(model.size)      # flux conserved in expectation
    assert noisy.std() / sig == pytest.approx(1.0, abs=0.01)
    counts = (band.add_noise(model, rng=3, background=False) * band.total_exposure_time)
    assert np.allclose(counts, np.round(counts))                           # real Poisson counts
    assert np.array_equal(band.add_noise(model, rng=9), band.add_noise(model, rng=9))


def test_point_source_depth_is_consistent():
    b = get_survey('LSST').band('r')
    m5 = b.point_source_depth(5.0)
    flux = b.mag_to_cps(m5) * b.total_exposure_time
    nea = 1 / (b.psf_kernel() ** 2).sum()
    assert nea == pytest.approx(4 * math.pi * (b.psf_fwhm * FWHM_TO_SIGMA / b.pixel_scale) ** 2, rel=0.05)
    noise = math.sqrt(flux + nea * (b.background_sigma * b.total_exposure_time) ** 2)
    assert flux / noise == pytest.approx(5.0, rel=1e-9)
    assert b.point_source_depth(10) < m5


def test_gaussian_kernel_moments_and_lenstronomy():
    k = gaussian_kernel(0.5, 0.1, size=41)
    assert k.shape == (41, 41) and k.sum() == pytest.approx(1.0)
    x = (np.arange(41) - 20) * 0.1
    assert (k.sum(0) * x ** 2).sum() == pytest.approx((0.5 * FWHM_TO_SIGMA) ** 2 + 0.1 ** 2 / 12, rel=1e-6)
    assert np.abs(gaussian_kernel(1.0, 0.1, 41) - kernel_util.kernel_gaussian(41, 0.1, 1.0)).max() < 2e-4
    with pytest.raises(ValueError, match='odd'):
        gaussian_kernel(0.5, 0.1, size=40)


def test_moffat_kernel_fwhm():
    k = moffat_kernel(0.9, 0.015, beta=2.5, size=301, supersample=1)
    row = k[150] / k[150, 150]
    above = np.where(row >= 0.5)[0]
    assert (above[-1] - above[0] + 1) * 0.015 == pytest.approx(0.9, abs=0.03)
    assert moffat_kernel(0.9, 0.2).sum() == pytest.approx(1.0)


def test_pixel_psf_from_real_fits(real_data):
    k = pixel_kernel_from_fits(real_data/'psfs'/'tinytim_acs_wfc_f814w_psf_example.fits')
    assert k.shape == (147, 147) and k.sum() == pytest.approx(1.0)
    assert np.unravel_index(k.argmax(), k.shape) == (73, 73)


def test_bad_psf_files(tmp_path):
    from astropy.io import fits
    fits.PrimaryHDU(np.ones((10, 10))).writeto(tmp_path/'even.fits')
    with pytest.raises(PSFError, match='even.fits.*odd size'):
        pixel_kernel_from_fits(tmp_path/'even.fits')
    (tmp_path/'junk.fits').write_text('junk')
    with pytest.raises(PSFError, match='junk.fits'):
        pixel_kernel_from_fits(tmp_path/'junk.fits')
    with pytest.raises(PSFError, match='NaN'):
        check_kernel(np.full((3, 3), np.nan))


def test_unknown_survey_and_band():
    with pytest.raises(UnknownSurveyError, match="unknown survey 'Eucild'.*did you mean 'Euclid'"):
        get_survey('Eucild')
    with pytest.raises(UnknownSurveyError, match="unknown band 'q' for survey LSST"):
        get_survey('LSST').band('q')


def test_user_survey_files_yaml_ini_and_pixel_psf(tmp_path):
    from astropy.io import fits
    fits.PrimaryHDU(gaussian_kernel(0.6, 0.15, 21)).writeto(tmp_path/'psf_r.fits')
    (tmp_path/'wide.yaml').write_text(
        "name: WIDECAM\npixel_scale: 0.15\nread_noise: 4\nccd_gain: 1\n"
        "bands:\n  g: {zero_point: 27, sky_brightness: 22, exposure_time: 60, num_exposures: 3, psf_fwhm: 0.7, psf_type: moffat}\n"
        "  r: {zero_point: 27.2, sky_brightness: 21, exposure_time: 60, num_exposures: 3, psf_type: PIXEL, psf_file: psf_r.fits}\n")
    (tmp_path/'deep.ini').write_text("[survey]\nname = DEEPCAM\npixel_scale = 0.3\nread_noise = 5\nccd_gain = 2\n"
                                     "[band:z]\nzero_point = 26\nsky_brightness = 19\nexposure_time = 100\n"
                                     "num_exposures = 10\npsf_fwhm = 1.1\n")
    (tmp_path/'notes.txt').write_text('ignored')
    names = [s.name for s in load_user_surveys(tmp_path)]
    assert names == ['DEEPCAM', 'WIDECAM']
    w = get_survey('widecam')
    assert w.band('g').psf_type == 'MOFFAT'
    assert w.band('r').psf_kernel().shape == (21, 21)
    assert w.band('r').effective_fwhm == pytest.approx(0.6, rel=0.03)     # measured from the pixelised PSF
    kw = w.band('r').kwargs_single_band()
    assert kw['psf_type'] == 'PIXEL' and kw['kernel_point_source'].sum() == pytest.approx(1.0)
    assert get_survey('DEEPCAM').band('z').ccd_gain == 2.0
    assert 'WIDECAM' in list_surveys()


@pytest.mark.parametrize('text, needle', [
    ("name: X\nbands:\n  g: {zero_point: 27}\n", "band 'g': missing key 'pixel_scale'"),
    ("name: X\npixel_scale: 0.2\nread_noise: 1\nccd_gain: 1\nbands:\n  g: {zero_point: 27, sky_brightness: 22, "
     "exposure_time: 60, num_exposures: 3, psf_fwhm: 0.7, colour: red}\n", "unknown key 'colour'"),
    ("name: X\npixel_scale: -0.2\nread_noise: 1\nccd_gain: 1\nbands:\n  g: {zero_point: 27, sky_brightness: 22, "
     "exposure_time: 60, num_exposures: 3, psf_fwhm: 0.7}\n", "pixel_scale = -0.2 must be > 0"),
    ("name: X\npixel_scale: 0.2\nread_noise: 1\nccd_gain: 1\nbands:\n  g: {zero_point: abc, sky_brightness: 22, "
     "exposure_time: 60, num_exposures: 3, psf_fwhm: 0.7}\n", "zero_point = 'abc' is not a float"),
    ("name: X\npixel_scale: 0.2\nread_noise: 1\nccd_gain: 1\nbands:\n  g: {zero_point: 27, sky_brightness: 22, "
     "exposure_time: 60, num_exposures: 3}\n", "needs psf_fwhm"),
    ("name: X\nbands: {}\n", "no bands"),
    ("pixel_scale: 0.2\n", "missing or too long key 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: LSST\npixel_scale: 0.2\nread_noise: 1\nccd_gain: 1\nbands:\n  g: {zero_point: 27, sky_brightness: 22, "
     "exposure_time: 60, num_exposures: 3, psf_fwhm: 0.7}\n", "is a built-in survey"),
])
def test_bad_user_survey_files(tmp_path, text, needle):
    p = tmp_path/'bad.yaml'
    p.write_text(text)
    with pytest.raises(SettingsError) as e:
        load_user_surveys(tmp_path) if 'built-in' in needle else load_survey_file(p)
    assert needle in str(e.value) and 'bad.yaml' in str(e.value)


def test_example_lens_conserves_flux():
    "The noiseless example lens holds the lens light plus the magnified source light."
    b = get_survey('Euclid').band('VIS')
    img = render_example_lens(b, size_arcsec=12.0, noise=False)
    lens_only = render_example_lens(b, size_arcsec=12.0, noise=False, source_mag=99.0)
    assert lens_only.sum() == pytest.approx(b.mag_to_cps(20.5), rel=0.03)  # de Vaucouleurs light inside 12"
    mu = (img - lens_only).sum() / b.mag_to_cps(22.0)
    assert 3 < mu < 30                                                     # a strongly magnified source


@pytest.mark.parametrize('fwhm, pixel_scale', [(0.6, 0.15), (1.0, 0.05), (0.2, 0.074)])
def test_half_max_fwhm_recovers_gaussian_fwhm(fwhm, pixel_scale):
    from slnb.surveys import half_max_fwhm
    assert half_max_fwhm(gaussian_kernel(fwhm, pixel_scale), pixel_scale) == pytest.approx(fwhm, rel=0.025)
