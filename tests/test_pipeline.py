"The papermill report chain: runs, writes HTML without code, resumes, re-runs what changed."
import json

import numpy as np
import shutil
from pathlib import Path

import pytest

from slnb.core import SettingsError, load_settings
from slnb.pipeline import ReportError, run_field_report, step_fingerprint

ROOT = Path(__file__).resolve().parent.parent


def field_settings(tmp_path, templates=None, extra=''):
    ini = tmp_path/'settings.ini'
    ini.write_text(f"[paths]\nreports = {tmp_path}/reports\ntemplates = {templates or ROOT/'reports'/'templates'}\n"
                   f"[field:tiny]\nsurvey = CSST\nbands = g,i\nn_cutouts = 4\nseed = 3\n{extra}")
    return load_settings(ini)


@pytest.fixture(scope='module')
def tiny_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('report')
    s = field_settings(tmp)
    return s, run_field_report('tiny', s)


def test_chain_runs_and_writes_the_report(tiny_report):
    s, rep = tiny_report
    out = s.paths['reports']/'tiny'
    assert rep.ran == ['00_survey_overview'] and rep.skipped == []
    for name in ('00_survey_overview.ipynb', '00_survey_overview.html', 'index.html', 'survey_bands.ecsv'):
        assert (out/name).is_file(), name
    for fig in ('survey_depths', 'psf_CSST', 'example_lens_by_survey'):
        assert (out/'figures'/f'{fig}.png').is_file() and (out/'figures'/f'{fig}.pdf').is_file()
    html = (out/'00_survey_overview.html').read_text()
    assert 'seed_everything' not in html                     # --no-input: no code in the report
    assert 'Field <code>tiny</code>' in html or 'tiny' in html
    assert 'measured/predicted' in html
    nb = json.loads((out/'00_survey_overview.ipynb').read_text())
    injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert injected and "survey = \"CSST\"" in ''.join(injected[0]['source'])
    assert not list(out.glob('.*.tmp*'))                    # no temporary files left


def test_second_run_resumes(tiny_report):
    s, first = tiny_report
    html = s.paths['reports']/'tiny'/'00_survey_overview.html'
    mtime = html.stat().st_mtime_ns
    again = run_field_report('tiny', s)
    assert again.ran == [] and again.skipped == first.ran
    assert html.stat().st_mtime_ns == mtime


def test_changed_template_or_parameters_rerun(tmp_path):
    tpl = tmp_path/'templates'; shutil.copytree(ROOT/'reports'/'templates', tpl)
    p = tpl/'00_survey_overview.ipynb'
    a = step_fingerprint(p, {'seed': 1})
    assert a == step_fingerprint(p, {'seed': 1}) and a != step_fingerprint(p, {'seed': 2})
    assert a != step_fingerprint(p, {'seed': 1}, previous='x')
    p.write_bytes(p.read_bytes().replace(b'Survey overview', b'Survey overview (edited)'))
    assert step_fingerprint(p, {'seed': 1}) != a


def test_half_finished_step_is_redone(tiny_report):
    "A step whose HTML is missing (killed between notebook and HTML) runs again."
    s, _ = tiny_report
    (s.paths['reports']/'tiny'/'00_survey_overview.html').unlink()
    assert run_field_report('tiny', s).ran == ['00_survey_overview']


def test_failed_notebook_is_kept_and_named(tmp_path):
    tpl = tmp_path/'templates'; tpl.mkdir()
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("field = 'x'", metadata={'tags': ['parameters']}),
                                         nbformat.v4.new_code_cell("raise ValueError('no good')")])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(nb, tpl/'broken.ipynb')
    s = field_settings(tmp_path, templates=tpl, extra='')
    with pytest.raises(ReportError, match="broken.ipynb failed in cell .*ValueError: no good"):
        run_field_report('tiny', s, chain=['broken'])
    assert (s.paths['reports']/'tiny'/'broken.failed.ipynb').is_file()
    assert not (s.paths['reports']/'tiny'/'broken.ipynb').exists()


def test_bad_field_and_template(tmp_path):
    s = field_settings(tmp_path)
    with pytest.raises(SettingsError, match='no section \\[field:nope\\]'):
        run_field_report('nope', s)
    with pytest.raises(ReportError, match="chain names 'missing'"):
        run_field_report('tiny', s, chain=['missing'])
    bad = field_settings(tmp_path, extra='')
    (tmp_path/'settings.ini').write_text((tmp_path/'settings.ini').read_text().replace('bands = g,i', 'bands = g,VIS'))
    with pytest.raises(SettingsError, match="\\[field:tiny\\] unknown band 'VIS' for survey CSST"):
        run_field_report('tiny', load_settings(tmp_path/'settings.ini'))


FULL_CHAIN = ['00_survey_overview', '10_field', '20_detect', '30_predict', '40_fit', '90_summary']


@pytest.fixture(scope='module')
def field_report(tmp_path_factory):
    "The whole chain on a small simulated LSST field (384 x 384 pixels, half of its bright galaxies lenses, one fit)."
    tmp = tmp_path_factory.mktemp('field')
    ini = tmp/'settings.ini'
    ini.write_text(f"[paths]\nreports = {tmp}/reports\ntemplates = {ROOT/'reports'/'templates'}\nweights = {ROOT/'data'/'weights'}\n"
                   f"[report]\nchain = {', '.join(FULL_CHAIN)}\n"
                   "[field:small]\nsurvey = LSST\nbands = g,r,i\nseed = 5\nsize = 384\nlens_fraction = 0.5\n"
                   "fit_max = 1\nfit_steps = 30\n")
    s = load_settings(ini)
    return s, run_field_report('small', s)


def test_field_chain_finds_scores_models_and_catalogues(field_report):
    from astropy.table import Table
    from slnb.io import read_catalog
    s, rep = field_report
    out = s.paths['reports']/'small'
    assert rep.ran == FULL_CHAIN
    for name in ('field.fits', 'sources.ecsv', 'truth.ecsv', 'cutouts.fits', 'detections.ecsv', 'candidate_cutouts.fits',
                 'predictions.ecsv', 'fits.ecsv', 'candidates.ecsv', 'candidates.fits', 'completeness_purity.ecsv', 'index.html'):
        assert (out/name).is_file(), name
    for fig in ('field', 'sources', 'p_lens_histogram', 'ranked_gallery', 'field_candidates'):
        assert (out/'figures'/f'{fig}.png').is_file() and (out/'figures'/f'{fig}.pdf').is_file(), fig
    truth, sources = Table.read(out/'truth.ecsv'), Table.read(out/'sources.ecsv')
    assert sources['is_lens'].sum() == truth['is_lens'].sum() > 0          # every lens is extracted as a source
    cands = Table.read(out/'candidates.ecsv')
    det = read_catalog(out/'detections.ecsv')
    assert len(cands) == int((det['p_lens'] >= 0.5).sum()) > 0
    assert list(cands['p_lens']) == sorted(cands['p_lens'], reverse=True)
    assert {'ra', 'dec', 'cnn_theta_E', 'cnn_theta_E_std', 'mcmc_theta_E', 'mcmc_theta_E_lo', 'mcmc_converged'} <= set(cands.colnames)
    fitted = cands[~np.ma.getmaskarray(cands['mcmc_theta_E'])]
    assert len(fitted) == 1 and fitted['p_lens'][0] == cands['p_lens'].max()             # fit_max = 1: the best one
    assert (out/'figures'/f"fit_{fitted['id'][0]}.png").is_file() and (out/'figures'/f"corner_{fitted['id'][0]}.pdf").is_file()
    score = Table.read(out/'completeness_purity.ecsv')
    c = np.asarray(score['completeness'], float)
    assert np.all((c[np.isfinite(c)] >= 0) & (c[np.isfinite(c)] <= 1)) and c[0] >= 0.5      # most lenses of any theta_E found
    assert float(score['purity'][0]) >= 0.5                 # the shipped finder on its own survey: most candidates are lenses
    page = (out/'90_summary.html').read_text()
    assert 'completeness' in page and 'candidates.ecsv' in page
    report = (out/'report.html').read_text()                 # one file, readable offline: figures embedded
    assert report.count('data:image/png;base64,') >= 8 and 'src="figures/' not in report
    assert '<h2>candidates.ecsv</h2>' in report and '<h2>completeness_purity.ecsv</h2>' in report


def test_field_chain_killed_while_fitting_resumes_to_the_same_catalogue(field_report):
    "Killed after the fits (or during them: the fit's JSON row not yet written) and run again: the earlier steps are\
 skipped, the fit is finished from its saved mode and HDF5 chain (not searched again), and the catalogue is the same."
    s, _ = field_report
    out = s.paths['reports']/'small'
    before = (out/'candidates.ecsv').read_text()
    rows = [p for p in (out/'chains').glob('*/*.json') if not p.name.endswith('.mode.json')]   # chains/<key>/<id>.json,
    assert len(rows) == 1 and rows[0].with_suffix('.h5').is_file() and rows[0].with_suffix('.mode.json').is_file()  # .h5
    for p in [out/'40_fit.html', out/'90_summary.ipynb', out/'90_summary.html', out/'candidates.ecsv'] + rows:
        p.unlink()
    again = run_field_report('small', s)
    assert again.skipped == FULL_CHAIN[:4] and again.ran == ['40_fit', '90_summary']
    strip = lambda t: [l for l in t.splitlines() if 'seconds' not in l and not l.startswith('# ')]     # timing and metadata aside
    assert strip((out/'candidates.ecsv').read_text()) == strip(before)


def test_field_detection_on_dask_worker_processes_equals_one_process(field_report):
    "The field's cutouts scored by a Dask scheduler with two worker processes on 127.0.0.1 (in chunks, so that both\
 work) give the scores of one process."
    from dask.distributed import LocalCluster
    from slnb.detect import _score_on_dask, detect_cube, find_finder
    from slnb.io import read_catalog
    s, _ = field_report
    out = s.paths['reports']/'small'
    local = read_catalog(out/'detections.ecsv')
    folder = find_finder('LSST', 'g,r,i')
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1', dashboard_address=None) as cl:
        whole, _ = detect_cube(out/'cutouts.fits', scheduler=cl.scheduler_address, show_progress=False)
        chunked = _score_on_dask(out/'cutouts.fits', folder, [0, 1, 2],
                                 len(local), cl.scheduler_address, 64, chunk=16)
    assert list(whole['id']) == list(local['id'])
    assert np.allclose(whole['p_lens'], local['p_lens'], rtol=0, atol=1e-6)
    assert np.allclose(chunked, local['p_lens'], rtol=0, atol=1e-6)


def _field_file_settings(tmp_path, fits_path):
    ini = tmp_path/'settings.ini'
    ini.write_text(f"[paths]\nreports = {tmp_path}/reports\ntemplates = {ROOT/'reports'/'templates'}\nweights = {ROOT/'data'/'weights'}\n"
                   f"[report]\nchain = {', '.join(FULL_CHAIN[1:])}\n"
                   f"[field:given]\nsurvey = LSST\nbands = g,r,i\nsource = field\npath = {fits_path}\n")
    return load_settings(ini)


def test_an_empty_field_gives_a_report_that_says_so(tmp_path):
    "A field of pure noise (no source above 5 sigma): every step runs, and the report says there is nothing."
    from astropy.table import Table
    from slnb.field import Field, field_wcs, write_field
    from slnb.surveys import get_survey
    bands = get_survey('LSST').select('g,r,i')
    noise = np.random.default_rng(0).normal(0, 1, (3, 192, 192)).astype(np.float32) * np.array([b.background_sigma for b in bands], np.float32)[:, None, None]
    fld = Field(noise, 'LSST', ['g', 'r', 'i'], 0.2, {b.name: b.zero_point for b in bands}, field_wcs(192, 0.2, 150.1, 2.2), Table())
    write_field(fld, tmp_path/'empty.fits')
    s = _field_file_settings(tmp_path, tmp_path/'empty.fits')
    rep = run_field_report('given', s)
    out = s.paths['reports']/'given'
    assert rep.ran == FULL_CHAIN[1:]
    assert '0 sources' in (out/'10_field.html').read_text()
    assert 'no lens candidate' in (out/'90_summary.html').read_text()
    assert not (out/'candidates.ecsv').exists() and (out/'report.html').is_file()


def test_a_bad_field_file_stops_with_its_name_and_the_report_says_so(tmp_path):
    bad = tmp_path/'truncated.fits'
    bad.write_bytes(b'SIMPLE  =                    T' + b' ' * 100)
    s = _field_file_settings(tmp_path, bad)
    with pytest.raises(ReportError, match='10_field.ipynb failed .*truncated.fits'):
        run_field_report('given', s)
    page = (s.paths['reports']/'given'/'index.html').read_text()
    assert 'The report stopped' in page and 'truncated.fits' in page
