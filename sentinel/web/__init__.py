"""The HTTP API: thin aiohttp handlers over the daemon, the gate and the alert store."""
