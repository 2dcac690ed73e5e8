# The acceptor role: TCP and the DICOM Upper Layer in (server), requests out to the broker
# (bridge), and the `python -m node.acceptor` process (main). Nothing is imported here, so
# that node.ae may use the server without loading the acceptor's process code.
