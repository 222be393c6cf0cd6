"""Every config section, one file per section, on one base class."""
