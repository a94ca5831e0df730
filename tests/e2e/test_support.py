"""The test support itself: what the benchmarks and suites rely on when they start the service."""

from __future__ import annotations

from pathlib import Path

from runtime_api_support.service import binary_path


def test_a_relative_binary_path_means_the_callers_directory(monkeypatch, tmp_path):
    # The service runs in a directory of its own (cwd = its state dir's parent): a relative
    # RUNTIME_API_BIN, as bench/memory.py's doc gives it, has to be resolved before that.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNTIME_API_BIN", "target/release/runtime-api")
    path = binary_path()
    assert path.is_absolute()
    assert path == tmp_path / "target" / "release" / "runtime-api"
    monkeypatch.setenv("RUNTIME_API_BIN", "/opt/runtime-api")
    assert binary_path() == Path("/opt/runtime-api")
