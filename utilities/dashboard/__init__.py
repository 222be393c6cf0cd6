"""farm_dashboard.py's work: a read-only web page of the whole farm.

It reads what the other roles already keep (the harvesters' exports as ``-fr`` fetches them, this
machine's state database) and renders it; it decides nothing and changes nothing, so it may
import any role's report functions, and nothing imports it.
"""
