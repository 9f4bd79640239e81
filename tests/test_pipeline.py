"The papermill report chain: runs, writes HTML without code, resumes, re-runs what changed."
import json
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
