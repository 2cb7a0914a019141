"""The network layer, pure: IP, UDP and ICMP packets (``wire``) and a TCP that is a full
peer of the command's kernel (``tcp``). Bytes and ``now`` in, events and bytes out."""
