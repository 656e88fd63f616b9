"""actlab's Hydra sweepers: resumable grids (`actlab_grid`) and Optuna studies (`actlab_optuna`).

Hydra imports every module under the `hydra_plugins` namespace at start-up, so
these modules import nothing heavy (Optuna, pandas) at module level.
"""
