"""Plot jobs: starting, watching and stopping plotter processes (local and over SSH)."""
