"""TLS: the run's CA and the certificates it mints (``ca``), the trust files and
variables that make the command trust it (``trust``), ClientHello parsing
(``clienthello``), and both sessions of an intercepted connection over memory BIOs
(``tlsterm``)."""
