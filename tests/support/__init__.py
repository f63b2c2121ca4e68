"""Test support: scenario data, a real Prometheus, protocol-faithful fake servers."""
