"""The SuperLoss benchmark suite: data → noise → model → method → one trainer → results → report.

``docs/architecture.md`` draws the parts and the flow of one run. Needs the ``bench`` extra (numpy,
scikit-learn, matplotlib, tqdm, …). Nothing in the core imports it.
"""
