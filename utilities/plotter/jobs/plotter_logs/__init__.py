"""One module per plotter program, each reading that program's log lines (see ``progress.py``).

Each has ``read_line(builder, line)``, which moves a ``progress_model.ProgressBuilder`` along
for one cleaned line, and ``SIGNATURE``, a pattern only that program's lines match. Supporting
another plotter means another module here and its entry in ``progress.py``.
"""
