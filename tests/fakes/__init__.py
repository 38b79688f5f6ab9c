"""Loopback fakes of the remote services, speaking their real HTTP protocols."""
