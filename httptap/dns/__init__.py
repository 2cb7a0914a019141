"""DNS: the wire format, pure (``message``), and the answers from the host's resolver and
nameservers (``resolver``)."""
