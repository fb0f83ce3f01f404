"""Who may call the broker: credentials (YAML), SigV4 and bearer-token verification, and the
policy that says which principal may manage rules and put events on which bus.

`middleware.py` is the only piece the broker installs; the other modules do one job each and
know nothing of aiohttp, so they are tested without a server.
"""
