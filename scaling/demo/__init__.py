"""`scaling demo`: the end-to-end check that a small sweep predicts a 10x larger run."""
