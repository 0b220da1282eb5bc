"""Behaviour under failure: real experiments on real daemons with real traffic, measured."""
