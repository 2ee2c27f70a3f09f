"""Scores of embeddings against labels, in numpy: retrieval (nDCG, MRR, recall) and STS (Spearman).

Used by the training loops' held-out evaluation, ``tarka-jax evaluate`` and the demo; computed the
way MTEB computes them (no torch, no mteb).
"""
