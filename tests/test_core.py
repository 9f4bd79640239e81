"Settings, seeds, devices, atomic writes, progress bars."
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from slnb.core import (DeviceError, SettingsError, atomic_path, atomic_write, get_device, load_settings,
                       progress, progress_enabled, seed_everything)


def write_ini(tmp_path, text):
    p = tmp_path/'settings.ini'
    p.write_text(text)
    return p


def test_project_settings_load_and_are_valid():
    s = load_settings()
    assert s.file.name == 'settings.ini' and s.field('demo').survey == 'LSST'
    assert s.field('demo').bands == ['g', 'r', 'i'] and s.workers >= 1
    assert s.paths['templates'].is_dir()


def test_defaults_and_relative_paths(tmp_path):
    s = load_settings(write_ini(tmp_path, "[field:a]\nsurvey = CSST\nbands = g\n"))
    assert s.survey == 'LSST' and s.seed == 42 and s.device == 'auto'
    assert s.paths['reports'] == (tmp_path/'reports').resolve()
    assert s.field('a').seed == 42 and s.field('a').n_cutouts == 64


@pytest.mark.parametrize('text, needle', [
    ("[slnb]\nsurvy = LSST\n", "[slnb] unknown key 'survy' (did you mean 'survey'?)"),
    ("[slnb]\nseed = abc\n", "[slnb] seed = 'abc'"),
    ("[slnb]\nworkers = -1\n", "workers = '-1': must be a positive integer"),
    ("[slnb]\ndevice = tpu\n", "device = 'tpu': must be auto, cpu, cuda"),
    ("[slnb]\nlog_level = LOUD\n", "log_level = 'LOUD'"),
    ("[nonsense]\nx = 1\n", "unknown section [nonsense]"),
    ("[field:f]\nbands = g\n", "[field:f] missing required key 'survey'"),
    ("[field:f]\nsurvey = LSST\nbands = g\nsource = fits\n", "source = fits needs a 'path'"),
    ("[field:f]\nsurvey = LSST\nbands = g\nn_cutouts = 0\n", "n_cutouts = '0'"),
    ("[slnb\n", "not a valid INI file"),
])
def test_bad_settings_name_file_section_and_key(tmp_path, text, needle):
    with pytest.raises(SettingsError) as e:
        load_settings(write_ini(tmp_path, text))
    assert needle in str(e.value) and str(tmp_path/'settings.ini') in str(e.value)


def test_unknown_field_lists_the_fields():
    with pytest.raises(SettingsError, match="no section \\[field:dmeo\\].*demo.*did you mean 'demo'"):
        load_settings().field('dmeo')


def test_missing_settings_file(tmp_path):
    with pytest.raises(SettingsError, match='settings file not found'):
        load_settings(tmp_path/'nope.ini')


def test_settings_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv('SLNB_SETTINGS', str(write_ini(tmp_path, "[slnb]\nseed = 7\n")))
    assert load_settings().seed == 7


def draws(seed):
    rng = seed_everything(seed)
    return (random.random(), np.random.rand(3).tolist(), torch.randn(3).tolist(), rng.normal(size=3).tolist())


def test_one_seed_reproduces_python_numpy_torch():
    assert draws(123) == draws(123)
    a, b = draws(123), draws(124)
    assert all(x != y for x, y in zip(a, b))


def test_device_choice(tmp_path, monkeypatch):
    assert get_device('cpu').type == 'cpu'
    assert get_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    monkeypatch.setenv('SLNB_SETTINGS', str(write_ini(tmp_path, "[slnb]\ndevice = cpu\n")))
    assert get_device(None).type == 'cpu'                    # the setting
    monkeypatch.setenv('SLNB_DEVICE', 'auto')
    assert get_device(None) == get_device('auto')            # the environment overrides the setting
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match='no CUDA GPU'):
            get_device('cuda:0')


def test_atomic_write_keeps_old_file_when_killed(tmp_path):
    out = tmp_path/'a.txt'
    with atomic_write(out) as f:
        f.write('complete')
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)   # usual permissions, not mkstemp's
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(out) as f:
            f.write('partial')
            raise KeyboardInterrupt
    assert out.read_text() == 'complete'
    assert [p.name for p in tmp_path.iterdir()] == ['a.txt']


def test_atomic_path_for_libraries(tmp_path):
    out = tmp_path/'sub'/'x.npy'
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and not out.exists()
        np.save(tmp, np.arange(3))
    assert np.load(out).tolist() == [0, 1, 2]


def test_progress_quiet_off_terminal(monkeypatch, capsys):
    monkeypatch.setenv('SLNB_PROGRESS', '0')
    assert not progress_enabled()
    assert sum(progress(range(5), desc='x')) == 10
    assert capsys.readouterr().err == ''
    monkeypatch.setenv('SLNB_PROGRESS', '1')
    assert progress_enabled()


def test_settings_found_from_an_analysis_folder(tmp_path, monkeypatch):
    "A settings.ini with slnb sections in the working directory (or a parent) is used; another tool's is not."
    monkeypatch.delenv('SLNB_SETTINGS', raising=False)
    work = tmp_path/'analysis'/'deep'
    work.mkdir(parents=True)
    (tmp_path/'analysis'/'settings.ini').write_text("[slnb]\nseed = 11\n")
    (work/'settings.ini').write_text("[DEFAULT]\nlib_name = other_tool\n")
    monkeypatch.chdir(work)
    s = load_settings()
    assert s.seed == 11 and s.file == (tmp_path/'analysis'/'settings.ini').resolve()
