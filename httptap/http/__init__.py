"""HTTP, pure: passive HTTP/1.x and HTTP/2 observers (``http1``, ``http2``) with content
decoding (``contentcoding``) and header helpers (``headers``), the reporter that turns
their events into the sink's messages (``report``), and WebSocket messages after a switch
(``websocket``, ``wsreport``)."""
