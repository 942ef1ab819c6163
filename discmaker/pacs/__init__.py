"""discmaker.pacs: send the verified originals of a received disc to a PACS (DICOM C-STORE).

The only part of discmaker that uses the network. It never sends anything the checker has not
verified: :func:`discmaker.pacs.store.import_disc` checks the disc with the same machinery as
``discmaker check``/``restore``, and only a VERIFIED disc's restored originals leave the
machine. Modules:

* :mod:`~discmaker.pacs.destination` — ``AET@HOST:PORT``, AE titles, the import's errors and
  exit codes (no network, light to import).
* :mod:`~discmaker.pacs.log` — the append-only import log (JSON lines).
* :mod:`~discmaker.pacs.network` — the DICOM association: C-ECHO, C-FIND, C-STORE (pynetdicom).
* :mod:`~discmaker.pacs.reconcile` — optional coercion of patient and study attributes, with
  the received values kept in Original Attributes Sequence.
* :mod:`~discmaker.pacs.store` — :func:`import_disc`, the whole import.
"""
