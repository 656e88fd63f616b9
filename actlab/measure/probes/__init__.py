"""Costlier measurements on their own interval (Hessian, gradient noise, GSNR, weight spectra)."""
