# The asyncio transport around the sans-IO core (server side and shared connection).
