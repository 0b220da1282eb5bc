"""libreswan as a customer gateway: pluto per gateway, controlled with its own tools.

- `install`: where the lab's private copy of libreswan lives (scripts/setup unpacks Debian's
  package there: it conflicts with strongSwan's, so it is never installed);
- `algorithms`: the lab's proposals in libreswan's `ike=` / `esp=` dialect, and what it lacks;
- `whack`: pluto's control socket (`whack --ctlsocket`), its status read into the shape VICI
  gives for strongSwan, so checks judge both implementations alike.
"""
