"""libreswan as a customer gateway: pluto per gateway, controlled with its own tools.

- `install`: where the lab's private copy of libreswan lives (scripts/setup unpacks Debian's
  package there: it conflicts with strongSwan's, so it is never installed), and where it is not
  run yet;
- `algorithms`, `conf`: the lab's proposals, IDs and DPD actions in libreswan's dialect, and
  what libreswan lacks;
- `pluto`: starting one pluto per gateway with every path its own;
- `whack`: its control socket (addconn, `whack --ctlsocket`: load, initiate, rekey, status);
- `status`: its status read into the shape VICI gives for strongSwan, so checks judge both
  implementations alike;
- `events`: its log lines as the events VICI raises for strongSwan (established, rekeyed, peer
  given up), timed by pluto's own stamps, for the scenarios;
- `userconf`: a user's own libreswan ipsec.conf, read by libreswan's parser, for `advise`.
"""
