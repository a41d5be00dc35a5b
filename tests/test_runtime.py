"""titok_cli.runtime: every TITOK_* switch read once, changed through the public functions only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from titok_cli import runtime
from titok_cli.errors import UsageError

from .conftest import ROOT


def _in_subprocess(code: str, **env: str) -> str:
    import os

    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_environment_is_read_once_and_parsed():
    code = (
        "import os; from titok_cli import runtime as r; a = (r.commit_seconds(), r.dist_backend(), r.debug()); "
        "os.environ['TITOK_COMMIT_SECONDS'] = '9'; print(a, r.commit_seconds(), r.onednn_linear())"
    )
    out = _in_subprocess(code, TITOK_COMMIT_SECONDS="0.5", TITOK_DIST_BACKEND="gloo", TITOK_DEBUG="1",
                         TITOK_CPU_LINEAR="aten")  # fmt: skip
    assert out == "(0.5, 'gloo', True) 0.5 False"  # the later change of the variable is not seen


def test_bad_values_are_usage_errors(monkeypatch):
    monkeypatch.setenv("TITOK_CPU_LINEAR", "fast")
    monkeypatch.setattr(runtime, "_values", {})  # as in a fresh process: nothing read yet
    with pytest.raises(UsageError, match="TITOK_CPU_LINEAR='fast'.*onednn, aten"):
        runtime.get("TITOK_CPU_LINEAR")
    monkeypatch.setenv("TITOK_COMMIT_SECONDS", "-1")
    with pytest.raises(UsageError, match="TITOK_COMMIT_SECONDS"):
        runtime.commit_seconds()
    with pytest.raises(KeyError, match="known"):
        runtime.get("TITOK_NO_SUCH")


def test_switches_context_restores_and_derived_values_follow():
    before = (runtime.onednn_linear(), runtime.float32_channels_last(), runtime.commit_seconds())
    with runtime.switches(TITOK_CPU_LINEAR="aten", TITOK_CHANNELS_LAST=True, TITOK_COMMIT_SECONDS=0.0):
        assert not runtime.onednn_linear() and runtime.float32_channels_last() and runtime.commit_seconds() == 0.0
        with runtime.switches(TITOK_CHANNELS_LAST="0"):
            assert not runtime.float32_channels_last()
        assert runtime.float32_channels_last()
    assert (runtime.onednn_linear(), runtime.float32_channels_last(), runtime.commit_seconds()) == before
    with pytest.raises(ValueError):
        runtime.set_switch("TITOK_CHANNELS_LAST", "sideways")


def test_auto_layout_follows_the_cpu_vendor():
    with runtime.switches(TITOK_CHANNELS_LAST="auto"):
        assert runtime.float32_channels_last() == (runtime.cpu_info().vendor == "AuthenticAMD")


def test_cpu_info_reads_the_first_processor():
    info = runtime.cpu_info()
    assert info.model_name and isinstance(info.flags, frozenset)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo here")
    assert info.vendor and info.vendor in text and info.model_name in text
    assert all(f in text for f in list(info.flags)[:5])


def test_debug_is_read_live_unless_set(monkeypatch):
    monkeypatch.setenv("TITOK_DEBUG", "1")
    assert runtime.debug()
    monkeypatch.setenv("TITOK_DEBUG", "0")
    assert not runtime.debug()  # a CLI runner may set it per invocation
    with runtime.switches(TITOK_DEBUG=True):
        assert runtime.debug()
    assert not runtime.debug()


def test_default_malloc_switch_skips_the_tuning():
    code = "from titok_cli import allocator as a; print(a.tune_unless_disabled(), '|', a.allocator_state())"
    assert _in_subprocess(code, TITOK_DEFAULT_MALLOC="1") == "default (TITOK_DEFAULT_MALLOC=1) | default"
    tuned, state = _in_subprocess(code, TITOK_DEFAULT_MALLOC="0").split(" | ")
    assert tuned == state != "default"  # the tuning ran (or says why it could not)
