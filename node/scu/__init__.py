# The SCU client: associations we request (association) and the DIMSE services sent on them
# (services). It runs no service code of its own: requests the peer sends back (C-GET
# sub-operations, N-EVENT-REPORT) go to the dispatcher its settings inject.
