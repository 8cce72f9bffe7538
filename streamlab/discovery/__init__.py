"""Pairing rendezvous: announcing this server to a rendezvous service."""
