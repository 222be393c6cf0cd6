"""A plot's journey from both ends: protocol, stream, sender, receiver, landing on a drive.

* ``protocol.py``: the lines, error kinds and exit codes both ends share; ``integrity.py``: the
  xxh3 hashing and the source's identity.
* plotter side: ``sender.py`` (``send_plot``, and ``exchange_plot``: one plot's READY, stream,
  VERIFY and OK) starts the receiver through ``channel.py`` (SSH, or a local process) and sends
  the bytes through ``stream.py``; ``session.py`` sends plot after plot through one receiver.
* harvester side: ``receiver.py`` (one receive or a session of them, run by receive_plot.py)
  over ``intake.py`` (the network) and ``landing.py`` (the disk); ``receive_set.py`` walks the
  receive set for a drive, ``claims.py`` holds one drive per receiver and shows who receives
  what, ``writeback.py`` keeps the drive writing while the plot streams.
* ``landing.py`` on ``part_files.py`` is how any plot is written onto a drive; ``local_copy.py``
  (with ``copy_worker.py``) lands a plot made on this machine through it too.
"""
