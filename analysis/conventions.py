"""How the counting convention moves fitted exponents (Li et al. 2025 data): the same runs, four rules.

Fits approach 3 to the final checkpoints of the misfitting sweep with N = all parameters or N without
embeddings, and approach 1 with C under each of the four FLOP-counting rules of the data set.

  python analysis/conventions.py [DATA_DIR]   (default ../shared/data)
"""

from __future__ import annotations

import sys
from pathlib import Path

from scaling.fit import load, pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
  d = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
  run = "run=model+total_steps+peak_lr+sweep"
  for n_col, c_col in (("N", "C"), ("N_no_emb", "C_no_emb"), ("N", "C_6ND"), ("N_no_emb", "C_6ND_no_emb")):
    df, conv = load.load([str(d / "misfitting2025_scaling_results_all_ckpts.csv")],
                         load.parse_columns(f"{run},N={n_col},C={c_col}"), f"N={n_col},C={c_col}")
    fit3 = pipeline.run(df, conv, pipeline.Options())
    fit1 = pipeline.run(df, conv, pipeline.Options(approach=1))
    p = fit3["params"]
    print(f"N={n_col:9} C={c_col:12} approach 3: alpha={p['alpha']:.4f} beta={p['beta']:.4f} "
          f"a={fit3['derived']['a']:.4f} | approach 1: a={fit1['params']['a']:.4f} b={fit1['params']['b']:.4f}")


if __name__ == "__main__":
  main()
