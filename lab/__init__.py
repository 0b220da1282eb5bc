"""ipsec-lab: real strongSwan gateways that check a customer gateway against a cloud VPN tunnel."""

__version__ = "0.1.0"
