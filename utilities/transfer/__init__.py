"""A plot's journey from both ends: protocol, stream, sender, receiver, landing on a drive.

* ``protocol.py``: the lines, error kinds and exit codes both ends share; ``integrity.py``: the
  xxh3 hashing and the source's identity.
* plotter side: ``sender.py`` (``send_plot``) starts the receiver through ``channel.py`` (SSH, or
  a local process) and sends the bytes through ``stream.py``.
* harvester side: ``receiver.py`` (one receive, run by receive_plot.py) over ``intake.py`` (the
  network) and ``landing.py`` (the disk).
* ``landing.py`` on ``part_files.py`` is how any plot is written onto a drive; ``local_copy.py``
  (with ``copy_worker.py``) lands a plot made on this machine through it too.
"""
