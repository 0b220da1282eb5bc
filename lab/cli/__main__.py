"""`python -m lab.cli`: the same command line as `ipsec-lab` (tests run it so)."""

from lab.cli import main

main()
