"""The disc station: a DICOM node a PACS sends studies to, which makes signed discs unattended.

:mod:`~discmaker.station.config` (the TOML settings), :mod:`~discmaker.station.spool` (received
instances, durable), :mod:`~discmaker.station.queue` (SQLite: instances, studies, jobs),
:mod:`~discmaker.station.jobs` (one job: author, self-check, burn or hand over),
:mod:`~discmaker.station.audit` (one line per disc) and :mod:`~discmaker.station.service`
(the loop, and the sink of :mod:`discmaker.pacs.receive`).
"""
