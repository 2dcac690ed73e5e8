# The seed's C-ECHO SCU example, as written, with `node` for `pynetdicom`.
import os
import sys

from node import AE

ae = AE()
ae.add_requested_context("1.2.840.10008.1.1")

assoc = ae.associate("127.0.0.1", int(os.environ["SEED_PORT"]))
if assoc.is_established:
    status = assoc.send_c_echo()
    print(f"C-ECHO status: 0x{status.Status:04x}")
    assoc.release()
else:
    print("Association rejected or aborted")
    sys.exit(1)
