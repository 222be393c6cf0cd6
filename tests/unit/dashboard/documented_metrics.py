"""The metric names the README lists: what node_exporter must serve and Grafana may chart."""

from __future__ import annotations

HARVESTER_METRICS = (
    "chia_pm_drive_plots", "chia_pm_drive_free_slots", "chia_pm_drive_free_bytes", "chia_pm_drive_total_bytes",
    "chia_pm_drive_offline", "chia_pm_drive_temperature_celsius", "chia_pm_receive_drive", "chia_pm_plots",
    "chia_pm_slots_until_full", "chia_pm_max_plots", "chia_pm_plots_last_24h", "chia_pm_days_to_fill",
    "chia_pm_chia_farmed_plots", "chia_pm_export_timestamp_seconds", "chia_pm_receive_set_drive",
    "chia_pm_drive_receives_in_flight", "chia_pm_drive_receive_bytes_per_second", "chia_pm_receives_available",
)
PLOTTER_METRICS = (
    "chia_pm_plots_sent_total", "chia_pm_bytes_sent_total", "chia_pm_transfer_failures_total",
    "chia_pm_bytes_saved_by_resume_total",
    "chia_pm_last_transfer_mb_per_second", "chia_pm_last_transfer_timestamp_seconds",
    "chia_pm_export_timestamp_seconds",
)
DOCUMENTED = tuple(sorted(set(HARVESTER_METRICS + PLOTTER_METRICS)))
