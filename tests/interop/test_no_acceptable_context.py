# What happens when no proposed presentation context is acceptable (issue 3's decision,
# node.acse.negotiation): we send an A-ASSOCIATE-AC with every context rejected, as DCMTK's
# storescp and pynetdicom do; the requestor then gives up (DCMTK aborts), and the node goes on.
from __future__ import annotations

from typing import Any

import pytest

from node.ul.pdu import AssociateAC, decode_pdu
from tests.synthetic import VERIFICATION, make_datasets, run_tool, wait_until, write_datasets

pytestmark = pytest.mark.interop


def test_storescu_with_no_acceptable_context(make_ae, tmp_path):
    scp = make_ae("ONLYECHO")
    scp.add_supported_context(VERIFICATION)
    seen: list[Any] = []
    scp.on_association_accepted = lambda association: seen.append(association.acceptance)
    scp.start(block=False)
    folder = tmp_path / "in"
    write_datasets(make_datasets(patients=1, studies=1, series=1, instances=1), folder)
    result = run_tool(["storescu", "-v", "127.0.0.1", scp.port, "+sd", folder])
    assert result.returncode != 0
    assert "No Acceptable Presentation Contexts" in result.output or (
        "No presentation context" in result.output
    )
    # the hook runs on the AE's loop thread just after the AC is sent: storescu may be gone first
    wait_until(lambda: seen, "the association-accepted hook")
    assert len(seen) == 1
    acceptance = seen[0]
    assert isinstance(acceptance.pdu, AssociateAC)  # an AC, not an RJ ...
    assert acceptance.pdu.presentation_contexts  # ... answering every proposed context ...
    assert not acceptance.accepted_contexts  # ... all of them rejected
    assert decode_pdu(acceptance.pdu.encode()) == acceptance.pdu
    echo = run_tool(["echoscu", "127.0.0.1", scp.port])  # the node is still serving
    assert echo.returncode == 0, echo.output
