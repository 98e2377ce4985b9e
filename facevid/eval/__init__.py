"""Evaluation: metrics, reenactment scores, synthetic factors, baselines, PNG reports."""
