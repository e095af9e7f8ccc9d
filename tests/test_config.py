"""Tests of the gin plumbing: configs ship inside the package, includes resolve from any working directory."""

import subprocess
import sys
import zipfile

from scaling import config


def test_top_level_configs_is_the_package_copy():
  assert (config.REPO_ROOT / "configs").resolve() == config.CONFIGS
  assert config.DEFAULT_EXPERIMENT.is_file()


def test_non_editable_install_runs_the_default_experiment_anywhere(tmp_path):
  """A wheel holds the gin files, and the default experiment parses from an unrelated working directory."""
  wheels = tmp_path / "wheels"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                  str(config.REPO_ROOT)], check=True, capture_output=True, timeout=300)
  (wheel,) = wheels.glob("scaling-*.whl")
  with zipfile.ZipFile(wheel) as z:
    assert "scaling/configs/experiments/default.gin" in z.namelist()
    z.extractall(tmp_path / "site")
  code = ("import scaling, sys; from scaling import config, loop, train; "
          "config.parse([str(config.DEFAULT_EXPERIMENT)], []); "
          "print(scaling.__file__); print(config.build(train.train_config).tokens)")
  work = tmp_path / "elsewhere"
  work.mkdir()
  env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
  out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  where, tokens = out.stdout.split()
  assert where.startswith(str(tmp_path / "site")) and int(tokens) > 0
  assert "Path not found" not in out.stderr


def test_includes_resolve_with_the_checkout_on_pythonpath(tmp_path):
  code = "from scaling import config, loop; config.parse([str(config.DEFAULT_EXPERIMENT)], []); print('ok')"
  env = {"PYTHONPATH": str(config.REPO_ROOT), "PATH": "/usr/bin:/bin"}
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert out.stdout.strip() == "ok" and "Path not found" not in out.stderr, out.stderr
