"Simulation and rendering: agreement with lenstronomy, physics of the population, reproducibility, clear errors."
import os

import numpy as np
import pytest
import torch
from astropy.io import fits

from slnb.cli import main
from slnb.io import read_cube
from slnb.render import Renderer, random_sersic_lenses, relative_l2, render_lenstronomy, sie_deflection
from slnb.simulate import (Distances, PopulationConfig, SimulationDataset, draw_deflectors, place_sources,
                           rerender_with_lenstronomy, simulate_cube, simulate_population, theta_E_sis)
from slnb.surveys import UnknownSurveyError, get_survey

LSST = get_survey('LSST').select('g,r,i')


def test_sis_deflection_is_theta_E_everywhere():
    x = torch.tensor([[0.3, -1.0, 2.0, 0.0]], dtype=torch.float64); y = torch.tensor([[0.4, 0.0, -1.5, 3.0]], dtype=torch.float64)
    one = lambda v: torch.tensor([v], dtype=torch.float64)
    ax, ay = sie_deflection(x, y, one(1.7), one(0.0), one(0.0), one(0.0), one(0.0))
    assert torch.allclose(torch.hypot(ax, ay), torch.full_like(ax, 1.7), atol=1e-6)


def test_renderer_equals_lenstronomy_with_full_supersampling():
    scenes = random_sersic_lenses(10, 3, rng=3)
    ref = render_lenstronomy(scenes, LSST, 48, supersample=2)
    ours = Renderer(LSST, 48, 2, refine_fraction=1.0, device='cpu').noiseless(scenes).numpy()
    assert relative_l2(ours, ref).max() < 1e-5


def test_adaptive_supersampling_meets_the_fidelity_target():
    scenes = random_sersic_lenses(20, 3, rng=4)
    ref = render_lenstronomy(scenes, LSST, 64, supersample=3)
    err = relative_l2(Renderer(LSST, 64, 3, device='cpu').noiseless(scenes).numpy(), ref)
    assert np.median(err) < 5e-3 and np.percentile(err, 99) < 2e-2


def test_flux_is_conserved_by_psf_and_supersampling():
    scenes = random_sersic_lenses(4, 3, rng=5)
    scenes.mass['theta_E'][:] = 0.0                         # unlensed: total flux is the analytic Sersic flux
    scenes.light['n_sersic'][:] = 1.5; scenes.light['R_sersic'][:] = 0.4   # compact: (nearly) all flux in the cutout
    from slnb.render import sersic_total_flux
    want = sum(sersic_total_flux(scenes.amp[:, c].numpy(), scenes.light['R_sersic'][:, c, None].numpy(),
                                 scenes.light['n_sersic'][:, c, None].numpy()) for c in range(2))
    got = Renderer(LSST, 128, 3, device='cpu').noiseless(scenes).sum((-2, -1)).numpy()
    assert np.allclose(got, want, rtol=2e-3)


def test_theta_E_follows_sigma_squared_and_distances():
    d = Distances()
    t1, t2 = theta_E_sis(200.0, 0.4, 2.0, d), theta_E_sis(300.0, 0.4, 2.0, d)
    assert t2 / t1 == pytest.approx(2.25, rel=1e-9)
    assert theta_E_sis(250.0, 0.5, 0.6, d) < theta_E_sis(250.0, 0.5, 2.5, d)


def test_deflectors_respect_ranges():
    cfg = PopulationConfig(theta_E_range=(0.8, 2.0))
    d = draw_deflectors(500, np.random.default_rng(0), cfg, Distances())
    assert d['theta_E'].min() >= 0.8 and d['theta_E'].max() <= 2.0
    assert (d['z_source'] > d['z_lens']).all() and (d['sigma_v'] >= 150).all()


def test_sources_are_multiply_imaged_as_asked():
    d = draw_deflectors(60, np.random.default_rng(1), PopulationConfig(), Distances())
    multi = np.arange(60) % 2 == 0
    _, _, n_img = place_sources(d, multi, np.random.default_rng(2))
    assert (n_img[multi] >= 2).all() and (n_img[~multi] == 1).all()


def test_population_has_lenses_and_every_nonlens_kind():
    scenes, cat = simulate_population(400, LSST, 0.25, rng=0)
    assert int(cat['is_lens'].sum()) == 100
    assert {'elliptical', 'spiral', 'ring', 'merger', 'pair', 'edge_on', 'star', 'clumpy_disk',
            'elliptical_neighbours'} <= set(cat['kind'])
    lens = cat['is_lens'] == 1
    assert np.isfinite(np.asarray(cat['theta_E'])[lens]).all() and np.isnan(np.asarray(cat['theta_E'])[~lens]).all()
    # lens galaxies are red, sources blue (g - i)
    assert np.median(cat['mag_lens_g'][lens] - cat['mag_lens_i'][lens]) > 1.0
    assert np.median(cat['mag_source_g'][lens] - cat['mag_source_i'][lens]) < 0.8


def test_lenses_are_magnified_and_detected():
    cube = simulate_cube(40, 'LSST', 'g,r,i', 1.0, seed=2, show_progress=False)
    assert np.median(cube.catalog['magnification']) > 2 and (cube.catalog['arc_snr'] > 0).all()


def test_simulated_cube_rerenders_with_lenstronomy(tmp_path):
    cube = simulate_cube(12, 'LSST', 'g,r,i', 1.0, seed=3, source='sersic', noiseless=True, show_progress=False)
    from slnb.io import write_cube
    back = read_cube(write_cube(cube, tmp_path/'s.fits'))
    err = relative_l2(back.images, rerender_with_lenstronomy(back))
    assert np.median(err) < 5e-3 and err.max() < 2e-2


def test_same_seed_gives_bit_identical_files(tmp_path):
    args = ['simulate', '--n', '12', '--seed', '5', '--variance', '--psf']
    assert main(args + ['-o', str(tmp_path/'a.fits')]) == 0
    assert main(args + ['-o', str(tmp_path/'b.fits')]) == 0
    assert (tmp_path/'a.fits').read_bytes() == (tmp_path/'b.fits').read_bytes()
    assert main(['simulate', '--n', '12', '--seed', '6', '-o', str(tmp_path/'c.fits')]) == 0
    assert not np.array_equal(read_cube(tmp_path/'a.fits').images, read_cube(tmp_path/'c.fits').images)


def test_cube_follows_the_spec(tmp_path):
    assert main(['simulate', '--n', '8', '--source', 'sersic', '--variance', '--psf', '--survey', 'CSST', '--bands', 'g,r,i',
                 '--size', '48', '-o', str(tmp_path/'c.fits')]) == 0
    cube = read_cube(tmp_path/'c.fits')
    assert cube.shape == (8, 3, 48, 48) and cube.survey == 'CSST' and cube.pixel_scale == 0.074
    assert sorted(cube.extensions) == ['PSF', 'VARIANCE']
    h = fits.getheader(tmp_path/'c.fits')
    assert h['SUPERSMP'] == 3 and h['PSF_G'] == pytest.approx(get_survey('CSST').band('g').psf_fwhm)
    for col in ('lens_light_R_sersic', 'source_amp_r', 'theta_E', 'is_lens', 'kind', 'arc_snr'):
        assert col in cube.catalog.colnames
    assert 'PARAMS' in cube.catalog.meta and 'POPCFG' in cube.catalog.meta


@pytest.mark.parametrize('args, message', [
    (['--survey', 'NOPE'], 'unknown survey'), (['--bands', 'g,w'], "unknown band 'w'"), (['--n', '0'], '--n must be > 0'),
    (['--n', '-3'], '--n must be > 0'), (['--lens-fraction', '-0.1'], 'must be in [0, 1]'),
    (['--lens-fraction', '2'], 'must be in [0, 1]')])
def test_bad_arguments_give_one_clear_line(tmp_path, capsys, args, message):
    assert main(['simulate', '--n', '4', '-o', str(tmp_path/'x.fits')] + args) == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_is_refused_before_work(tmp_path, capsys):
    assert main(['simulate', '--n', '4', '-o', str(tmp_path/'missing'/'x.fits')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['simulate', '--n', '4', '-o', str(tmp_path)]) == 2           # a folder, not a file
    assert 'is a folder' in capsys.readouterr().err
    if os.geteuid() == 0: pytest.skip('running as root: a read-only folder is still writable')
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try:
        assert main(['simulate', '--n', '4', '-o', str(ro/'x.fits')]) == 2
        assert 'not writable' in capsys.readouterr().err
    finally: ro.chmod(0o700)


def test_api_errors_are_clear():
    with pytest.raises(UnknownSurveyError, match='unknown survey'): simulate_cube(4, 'NOPE')
    with pytest.raises(ValueError, match='must be > 0'): simulate_cube(0)
    with pytest.raises(ValueError, match=r'in \[0, 1\]'): simulate_cube(4, lens_fraction=1.2)
    with pytest.raises(ValueError, match='source'): PopulationConfig(source='galaxy')


def test_dataset_streams_reproducibly():
    a = list(SimulationDataset('LSST', 'g,r,i', n=6, batch=4, seed=1))
    b = list(SimulationDataset('LSST', 'g,r,i', n=6, batch=4, seed=1))
    assert len(a) == 6 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    img, lab, par = a[0]
    assert img.shape == (3, 64, 64) and par.shape == (7,) and lab.dtype == torch.int64
    loader = torch.utils.data.DataLoader(SimulationDataset(n=8, batch=4, seed=2), batch_size=4)
    assert [x[0].shape for x in loader] == [(4, 3, 64, 64)] * 2


def test_real_cosmos_sources_are_lensed(real_data):
    cfg = PopulationConfig(real_source_fraction=1.0)
    cube = simulate_cube(6, 'LSST', 'g,r,i', 1.0, seed=1, cfg=cfg, noiseless=True, show_progress=False)
    assert all(str(k).startswith('cosmos:') for k in cube.catalog['source_kind'])
    assert np.median(cube.catalog['magnification']) > 1.5 and (cube.catalog['arc_snr'] > 0).all()


def test_without_real_data_sources_stay_analytic(monkeypatch, tmp_path):
    monkeypatch.setenv('SLNB_REAL_DATA', str(tmp_path))
    import slnb.simulate as sim
    monkeypatch.setattr(sim, '_REAL_CACHE', {})
    _, cat = simulate_population(20, LSST, 1.0, rng=0, cfg=PopulationConfig(real_source_fraction=1.0))
    assert set(cat['source_kind']) <= {'sersic', 'sersic+clumps'}


def test_a_star_through_a_moffat_psf_is_the_psf():
    from dataclasses import replace
    moffat = [replace(b, psf_type='MOFFAT', moffat_beta=2.5) for b in LSST]
    from slnb.render import scenes_from_numpy
    sc = scenes_from_numpy({}, {}, np.zeros((1, 1, 3)), point_xy=np.zeros((1, 1, 2)), point_flux=np.full((1, 1, 3), 50.0))
    img = Renderer(moffat, 33, 1, device='cpu').noiseless(sc).numpy()[0]
    for j, b in enumerate(moffat):
        k = b.psf_kernel()                                   # the band's own (larger) kernel, seen through 33 x 33 pixels
        c = (k.shape[0] - 33) // 2
        assert np.allclose(img[j] / 50.0, k[c:c + 33, c:c + 33], atol=1e-3 * k.max())


def test_renderer_rejects_bad_settings():
    with pytest.raises(ValueError, match='refine_fraction'): Renderer(LSST, 64, 3, refine_fraction=1.5, device='cpu')
    with pytest.raises(ValueError, match='supersample'): Renderer(LSST, 64, 0, device='cpu')
    with pytest.raises(ValueError, match='pixel scale'): Renderer(LSST + get_survey('Euclid').select('VIS'), 64, device='cpu')


def test_a_killed_simulation_resumes_with_the_same_result(tmp_path, monkeypatch):
    import slnb.simulate as sim
    args = ['simulate', '--n', '12', '--batch', '4', '--seed', '8']
    assert main(args + ['-o', str(tmp_path/'whole.fits')]) == 0
    real_observe, calls = sim.observe, {'n': 0}
    def dies_on_third(*a, **k):
        calls['n'] += 1
        if calls['n'] == 3: raise KeyboardInterrupt
        return real_observe(*a, **k)
    monkeypatch.setattr(sim, 'observe', dies_on_third)
    with pytest.raises(KeyboardInterrupt): main(args + ['-o', str(tmp_path/'resumed.fits')])
    assert not (tmp_path/'resumed.fits').exists()
    assert sorted(p.name for p in (tmp_path/'resumed.fits.partial').glob('batch_*.ecsv')) == ['batch_00000.ecsv', 'batch_00001.ecsv']
    calls['n'] = 0
    assert main(args + ['-o', str(tmp_path/'resumed.fits')]) == 0
    assert calls['n'] == 1                                     # only the unfinished batch was simulated again
    assert (tmp_path/'resumed.fits').read_bytes() == (tmp_path/'whole.fits').read_bytes()
    assert not (tmp_path/'resumed.fits.partial').exists()


def test_finished_batches_of_another_simulation_are_not_reused(tmp_path, capsys):
    from slnb.simulate import simulate_cube
    simulate_cube(4, seed=1, batch=2, work_dir=tmp_path/'w', show_progress=False)
    with pytest.raises(FileExistsError, match='different simulation'):
        simulate_cube(4, seed=2, batch=2, work_dir=tmp_path/'w', show_progress=False)


def test_supersampling_is_a_setting(tmp_path, capsys):
    ini = tmp_path/'settings.ini'
    ini.write_text('[simulate]\nsupersample = 2\nrefine_fraction = 1\n')
    assert main(['--settings', str(ini), 'simulate', '--n', '3', '-o', str(tmp_path/'s.fits')]) == 0
    h = fits.getheader(tmp_path/'s.fits')
    assert h['SUPERSMP'] == 2 and h['REFINE'] == 1
    assert main(['--settings', str(ini), 'simulate', '--n', '3', '--supersample', '4', '-o', str(tmp_path/'t.fits')]) == 0
    assert fits.getheader(tmp_path/'t.fits')['SUPERSMP'] == 4            # the command line wins
    ini.write_text('[simulate]\nrefine_fraction = 1.5\n')
    assert main(['--settings', str(ini), 'simulate', '--n', '3', '-o', str(tmp_path/'u.fits')]) == 2
    err = capsys.readouterr().err
    assert 'refine_fraction' in err and '[0, 1]' in err and 'Traceback' not in err


def test_compiled_renderer_matches_eager_and_lenstronomy():
    import slnb.render as R
    if not R.cxx_compiler_found(): pytest.skip('torch.compile needs a C++ compiler')
    scenes = random_sersic_lenses(6, 3, rng=6)
    r = Renderer(LSST, 32, 3, refine_fraction=1.0, device='cpu')
    eager = r.noiseless(scenes).numpy()
    try:
        assert R.use_compiled_kernel(True)
        fused = r.noiseless(scenes).numpy()
        z = torch.linspace(-60, 60, 100001)
        fast_atan = torch.compile(R._atan, fullgraph=True)(z)
    finally: R.use_compiled_kernel(False)
    assert (fast_atan - torch.atan(z)).abs().max() < 3e-7               # the fused polynomial arctangent
    assert relative_l2(fused, eager).max() < 1e-5
    assert relative_l2(fused, render_lenstronomy(scenes, LSST, 32, supersample=3)).max() < 1e-5


def test_compile_setting(tmp_path, capsys):
    from slnb.render import compile_wanted
    assert compile_wanted('on', 1) and not compile_wanted('off', 10 ** 6) and not compile_wanted('auto', 10)
    with pytest.raises(ValueError, match='auto, on or off'): compile_wanted('yes', 10)
    from slnb.render import cxx_compiler_found
    assert not compile_wanted('auto', 7, minimum=8) and compile_wanted('auto', 8, minimum=8) == cxx_compiler_found()
    ini = tmp_path/'settings.ini'
    ini.write_text('[simulate]\ncompile = maybe\n')
    assert main(['--settings', str(ini), 'simulate', '--n', '3', '-o', str(tmp_path/'s.fits')]) == 2
    assert 'compile' in capsys.readouterr().err


@pytest.mark.parametrize('refine', [1.0, 0.25])
def test_epl_lenses_equal_lenstronomy(refine):
    scenes = random_sersic_lenses(4, 3, rng=2)
    scenes.mass['gamma'] = torch.tensor([1.8, 1.95, 2.1, 2.25], dtype=torch.float64)
    ref = render_lenstronomy(scenes, LSST, 48, supersample=2)
    err = relative_l2(Renderer(LSST, 48, 2, refine_fraction=refine, device='cpu').noiseless(scenes).numpy(), ref)
    assert err.max() < (1e-4 if refine == 1 else 2e-2)


def test_psf_stacks_are_made_once_per_chunk_size_and_give_the_broadcast_product():
    import torch
    from slnb.render import convolve, psf_kernels_for
    from slnb.surveys import get_survey
    k = psf_kernels_for(get_survey('LSST').select('g,r,i'), 16)
    img = torch.rand(5, 3, 16, 16, dtype=torch.float64)
    rows, cols = k.to_torch('cpu', torch.float64)
    ref = rows[:, 0] @ img @ cols[:, 0].transpose(-1, -2)          # broadcast over scenes
    assert torch.allclose(convolve(img, k), ref, atol=1e-12)
    first = k.stacked(5, 'cpu', torch.float64)
    convolve(img, k)
    assert k.stacked(5, 'cpu', torch.float64) is first and first[0][0].shape == (15, 16, 16)
