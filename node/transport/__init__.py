# The asyncio connection around the sans-IO core, shared by the acceptor (node.acceptor.server)
# and the SCU client (node.scu.services).
