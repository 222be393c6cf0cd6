"""Plotter role: finding finished plots, choosing a harvester, sending, plot jobs."""
