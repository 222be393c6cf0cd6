"""Harvester role: the minute pass over the plot drives, reports, drive care, local moves."""
