"""One proxied connection as a pure core (``core``: what the flow is, TLS interception,
decoding, credit) and the commands it gives the proxy stage (``commands``)."""
