"""The papers' analyses as plain functions over measured estimates: caption ranking,
localization, prompt intervention, PID studies, attention baselines, calibration and the
statistics they share (intervals, thresholds, correlations). No Lightning.
"""
