"""The SuperLoss benchmark suite: data → noise → model → method → one training loop → results → report.

Needs the ``bench`` extra (numpy, scikit-learn, matplotlib, tqdm). Nothing in the core imports it.
"""
