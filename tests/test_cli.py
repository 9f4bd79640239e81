"The slnb command: help, version, info, surveys, and clear one-line errors for bad input."
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import slnb
from slnb.cli import main



def run(*args, **kw):
    env = {**os.environ, 'SLNB_PROGRESS': '0'}
    return subprocess.run([str(Path(sys.executable).parent/'slnb'), *args], capture_output=True, text=True, env=env, **kw)


def test_help_lists_subcommands():
    r = run('--help')
    assert r.returncode == 0
    for cmd in ('info', 'surveys', 'report', 'train', 'simulate', 'field', 'denoise', 'deblend', 'detect'):
        assert cmd in r.stdout


def test_version():
    r = run('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'slnb {slnb.__version__}'


def test_info_summarises_a_cube(cube_file):
    r = run('info', str(cube_file))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'survey      LSST' in out and 'g, r, i' in out and 'N = 6' in out and '(6, 3, 25, 25)' in out
    assert 'PSF (3, 15, 15)' in out and 'VARIANCE' in out and 'MASK' in out
    assert 'is_lens: 3 lenses, 3 non-lenses' in out and 'theta_E' in out


@pytest.mark.parametrize('content, needle', [(b'', 'not a FITS file'), (b'hello world', 'not a FITS file'),
                                             (None, 'file not found')])
def test_info_bad_file_is_one_clear_line(tmp_path, content, needle):
    p = tmp_path/'bad.fits'
    if content is not None:
        p.write_bytes(content)
    r = run('info', str(p))
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr and needle in r.stderr and str(p) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_info_truncated_cube(cube_file, tmp_path):
    p = tmp_path/'cut.fits'
    p.write_bytes(cube_file.read_bytes()[:5000])
    r = run('info', str(p))
    assert r.returncode == 2 and 'truncated' in r.stderr and 'Traceback' not in r.stderr


def test_surveys_table(capsys):
    assert main(['surveys', 'Euclid']) == 0
    out = capsys.readouterr().out
    assert 'VIS' in out and '0.101' in out and 'LSST' not in out
    assert main(['surveys', 'nope']) == 2
    assert "unknown survey 'nope'" in capsys.readouterr().err


def test_bad_settings_file_is_reported(tmp_path, capsys):
    (tmp_path/'s.ini').write_text('[slnb]\nsurvey_name = LSST\n')
    assert main(['--settings', str(tmp_path/'s.ini'), 'report', '--field', 'demo']) == 2
    assert "unknown key 'survey_name'" in capsys.readouterr().err


def test_report_takes_the_field_as_an_argument(tmp_path, capsys):
    (tmp_path/'s.ini').write_text('[field:demo]\nsurvey = LSST\nbands = g,r,i\n')
    assert main(['--settings', str(tmp_path/'s.ini'), 'report', 'cosmos']) == 2     # `slnb report FIELD`
    assert 'no section [field:cosmos]; fields defined: demo' in capsys.readouterr().err


def test_train_needs_known_models(capsys):
    assert main(['train']) == 2
    assert 'detect-lsst-gri' in capsys.readouterr().err
    assert main(['train', 'detect-lsst-gry']) == 2
    assert "did you mean 'detect-lsst-gri'" in capsys.readouterr().err
