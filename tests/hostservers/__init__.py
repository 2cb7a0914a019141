"""The servers that run inside each test host's network namespace, one module per job.

``tests/servers.py`` is the entry point (``testhosts.py`` runs it; its docstring lists
every endpoint) and re-exports what tests import. Standard library only (plus ``h2``),
no httptap imports. Layers, each importing only those before it:

* ``content``      constants, limits, the deterministic content and the ETag rule
* ``plumbing``     quiet errors, the dual-stack bind, the UDP answer loop
* ``gitpip``       ``Site``: files, git smart HTTP (CGI), the PEP 503 index
* ``websocket``    the WebSocket echo, a mixin of the HTTP/1.1 handler
* ``http1``        the HTTP/1.1 app and its endpoints
* ``http2``        the HTTP/2 session (``h2``)
* ``httpservers``  HTTP and HTTPS listeners, h2c and ALPN dispatch, the TLS context
* ``echo``         the TCP echo
* ``dns``          the DNS zone and its TCP server
"""
