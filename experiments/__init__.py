"""The named studies, one folder each; `python -m experiments.summarise STUDY` summarises one.

Shared summary helpers are in experiments.common, the study -> summary table in
experiments.registry.
"""
