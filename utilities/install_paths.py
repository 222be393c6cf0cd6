"""Where this installation's own files are: the one place paths are taken from ``__file__``.

Everything here is relative to the checkout the scripts run from (install.sh installs in place),
so the templates, the logging layout and the receiver always match the code that uses them.
The root scripts still find the checkout themselves, to put it on ``sys.path`` before
``utilities`` can be imported.
"""

from __future__ import annotations

from pathlib import Path

#: The checkout: the directory holding the root scripts and ``utilities/``.
INSTALL_DIR = Path(__file__).resolve().parent.parent

#: Jinja2 templates of the notifications and of ``receive_plot.sh``.
TEMPLATES_DIR = INSTALL_DIR / "templates"

#: The logging layout every role script loads (``system_logging.setup_logging``).
LOGGING_YAML = INSTALL_DIR / "config" / "logging.yaml"

#: The program ``receive_plot.sh`` runs to receive one plot.
RECEIVER = INSTALL_DIR / "receive_plot.py"

#: Where drive_manager.py writes ``receive_plot.sh`` unless ``harvester.receive_script`` says.
DEFAULT_RECEIVE_SCRIPT = INSTALL_DIR / "receive_plot.sh"
