"""Tests of the peak-FLOP/s table and the cached CPU probe."""

import json

import pytest

from scaling import hardware


@pytest.mark.parametrize(
    "kind,peak",
    [("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
     ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
     ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12), ("H100", 989e12), ("h100-sxm", 989e12),
     ("Some Future Chip", None), ("H1000", None), ("XH100", None)],
)
def test_declared_peaks(kind, peak):
  """Keys match whole words: a typo such as H1000 is no H100."""
  assert hardware.declared_peak(kind) == peak


def test_cpu_peak_is_measured_once_then_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("SCALING_CACHE_DIR", str(tmp_path))
  calls = []
  monkeypatch.setattr(hardware, "measure_cpu_peak", lambda: calls.append(1) or 1.5e11)
  assert hardware.cpu_peak() == 1.5e11
  assert hardware.cpu_peak() == 1.5e11
  assert len(calls) == 1
  assert json.loads((tmp_path / "cpu_peak.json").read_text())["flops_per_s"] == 1.5e11


def test_matmul_probe_measures_a_plausible_rate():
  assert 1e8 < hardware.measure_cpu_peak(size=256, repeats=2) < 1e14
