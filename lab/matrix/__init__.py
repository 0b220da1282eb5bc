"""Interop matrix: which cloud-tunnel settings a customer gateway negotiates (cases, results, reports)."""
