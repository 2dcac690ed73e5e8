# The seed's pynetdicom 1.x storage SCP example, as written, with `node` for `pynetdicom`
# (only the port comes from the environment). Run by tests/node/test_seed_examples.py.
import os

from pydicom.dataset import Dataset

from node import AE, PYNETDICOM_IMPLEMENTATION_UID, StoragePresentationContexts

ae = AE(port=int(os.environ["SEED_PORT"]))
ae.supported_contexts = StoragePresentationContexts


def on_c_store(ds, context, info):
    meta = Dataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = context.transfer_syntax

    ds.file_meta = meta
    ds.is_little_endian = context.transfer_syntax.is_little_endian
    ds.is_implicit_VR = context.transfer_syntax.is_implicit_VR

    status_ds = Dataset()
    status_ds.Status = 0x0000

    ds.save_as(ds.SOPInstanceUID, write_like_original=False)

    return status_ds


ae.on_c_store = on_c_store

ae.start()
