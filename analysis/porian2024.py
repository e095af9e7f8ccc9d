"""Reproduces Porian et al. 2024 (approach 2): weighted N* exponents, then our own IsoFLOP minima.

For every configuration in the shared data: the weighted fit of ln N* on ln C from the authors' optimal
pairs (their published exponent), and the exponent from our approach-2 pipeline run on the raw IsoFLOP
points with both per-budget models (Akima spline, as the authors; parabola near the minimum).

  python analysis/porian2024.py [DATA_DIR]   (default ../shared/data, else tests/data)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from scaling.fit import isoflop

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
  if len(sys.argv) > 1:
    return Path(sys.argv[1])
  shared = ROOT.parent / "shared" / "data"
  return shared if (shared / "porian2024_optimal_pairs.csv").is_file() else ROOT / "tests" / "data"


def main() -> None:
  d = data_dir()
  pairs = pd.read_csv(d / "porian2024_optimal_pairs.csv", comment="#")
  points = pd.read_csv(d / "porian2024_isoflop_points.csv", comment="#")
  published = {}
  if (d / "porian2024_fit_results.json").is_file():
    published = {k: v["weighted"]["n_exponent"] for k, v in json.loads((d / "porian2024_fit_results.json").read_text()).items()}
  print(f"{'config':42} {'published':>9} {'pairs':>7} {'spline':>7} {'parabola':>8}")
  for config in pairs["config"].unique():
    p = pairs[pairs["config"] == config].dropna()
    opt = isoflop.given_minima(pd.DataFrame({"C": p["flops"], "N": p["n_star"], "D": p["t_star"], "loss": p["loss_star"],
                                             "N_std": p["n_star_std_log"], "D_std": p["t_star_std_log"]}))
    raw = points[points["config"] == config]
    df = pd.DataFrame({"C": raw["flops"], "N": raw["n_params"], "D": raw["tokens"], "loss": raw["loss"]})
    row = [isoflop.allocation(opt).a] + [isoflop.fit_once(df, m, 0.01, True, False)[1].a for m in ("spline", "parabola")]
    pub = published.get(config, float("nan"))
    print(f"{config:42} {pub:9.4f} " + " ".join(f"{v:7.4f}" for v in row))


if __name__ == "__main__":
  main()
