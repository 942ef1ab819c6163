"""The local order for an import, looked up in the hospital's Modality Worklist (C-FIND).

IHE Import Reconciliation Workflow: the importer finds the local order (by its Accession
Number, or the local Patient ID) in the worklist and takes the local Patient ID, name and
Accession Number from it; :mod:`discmaker.pacs.reconcile` then writes them into the sent copies.
Exactly one patient must match: none, or several different patients, is the operator's to
resolve (the message says which), never a guess. The worklist's answer is bounded
(``MAX_MATCHES``) and every value is checked as a DICOM value before it is used.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.status import code_to_category

from discmaker.errors import UsageError
from discmaker.pacs.destination import DEFAULT_CALLING_AET, Destination, DestinationError
from discmaker.pacs.network import Tls, _close_socket, _probe, _refusal
from discmaker.pacs.reconcile import Reconciliation

log = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MAX_MATCHES = 100  # answers beyond this are not read: the query was too wide, or hostile


@dataclass(frozen=True)
class Order:
    """One worklist answer: the local values an import takes."""

    patient_id: str
    patient_name: str
    accession_number: str


def lookup_order(
    worklist: Destination | str,
    *,
    accession: str | None = None,
    patient_id: str | None = None,
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 30.0,
    tls: Tls | None = None,
) -> Reconciliation:
    """The local order with ``accession`` (or for ``patient_id``) as a :class:`Reconciliation`.

    :class:`DestinationError` when the worklist cannot be reached or refuses the query;
    :class:`UsageError` when no order, or orders of more than one patient, match.
    """
    if not accession and not patient_id:
        raise UsageError(
            "--worklist needs the local order to look for: give its --accession (or the "
            "local --patient-id)."
        )
    where = worklist if isinstance(worklist, Destination) else Destination.parse(worklist)
    orders = _query(where, accession, patient_id, calling_aet, timeout, tls)
    key = f"Accession Number {accession!r}" if accession else f"Patient ID {patient_id!r}"
    patients = {(o.patient_id, o.patient_name) for o in orders}
    if not orders:
        raise UsageError(
            f"The worklist at {where} has no order with {key}. Check the number, or give the "
            "local --patient-id and --patient-name yourself (without --worklist)."
        )
    if len(patients) > 1:
        raise UsageError(
            f"The worklist at {where} has orders of {len(patients)} different patients for "
            f"{key}; give the local --patient-id and --patient-name yourself."
        )
    (local_id, local_name) = patients.pop()
    accessions = {o.accession_number for o in orders if o.accession_number}
    found_accession = accession or (accessions.pop() if len(accessions) == 1 else None)
    log.debug("worklist %s: one patient for %s (%d order(s))", where, key, len(orders))
    return Reconciliation(
        patient_id=local_id or None,
        patient_name=local_name or None,
        accession_number=found_accession,
    )


def _query(
    where: Destination,
    accession: str | None,
    patient_id: str | None,
    calling_aet: str,
    timeout: float,
    tls: Tls | None,
) -> list[Order]:
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    context: ssl.SSLContext | None = tls.context() if tls is not None else None
    _probe(where, timeout)
    assoc = ae.associate(
        where.host,
        where.port,
        contexts=[build_context(MODALITY_WORKLIST_FIND)],
        ae_title=where.aet,
        tls_args=(context, where.host) if context is not None else None,
    )
    if not assoc.is_established:
        _close_socket(assoc)
        raise DestinationError(_refusal(where, calling_aet, assoc))
    query = Dataset()
    query.PatientID = patient_id or ""
    query.PatientName = ""
    query.AccessionNumber = accession or ""
    step = Dataset()
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepStartDate = ""
    step.Modality = ""
    query.ScheduledProcedureStepSequence = [step]
    orders: list[Order] = []
    try:
        for status, identifier in assoc.send_c_find(query, MODALITY_WORKLIST_FIND):
            if "Status" not in status:
                raise DestinationError(
                    f"The worklist at {where} stopped answering the query. Try again, or give "
                    "the local values yourself."
                )
            category = code_to_category(int(status.Status))
            if category == "Pending" and identifier is not None:
                orders.append(_order(identifier))
                if len(orders) >= MAX_MATCHES:
                    break
            elif category not in ("Pending", "Success"):
                raise DestinationError(
                    f"The worklist at {where} refused the query (status "
                    f"0x{int(status.Status):04X}). Ask its administrator whether "
                    f"{calling_aet!r} may query it."
                )
    finally:
        if assoc.is_established:
            assoc.abort() if len(orders) >= MAX_MATCHES else assoc.release()
    return orders


def _order(identifier: Dataset) -> Order:
    def text(keyword: str) -> str:
        try:
            value = identifier.get(keyword, "")
        except Exception:  # a value the worklist encoded wrongly: treated as absent
            return ""
        return str(value or "").strip()

    return Order(text("PatientID"), text("PatientName"), text("AccessionNumber"))


__all__ = ["MAX_MATCHES", "MODALITY_WORKLIST_FIND", "Order", "lookup_order"]
