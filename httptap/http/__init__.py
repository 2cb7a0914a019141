"""HTTP, pure: passive HTTP/1.x and HTTP/2 observers (``http1`` with its ``h1heads`` and
``h1readers``; ``http2`` with ``h2frames`` and ``h2reset``), their shared ``events``, content decoding
(``contentcoding``) and header helpers (``headers``), the reporter that turns their
events into the sink's messages (``report``), and WebSocket messages after a switch
(``websocket``, ``wsreport``)."""
