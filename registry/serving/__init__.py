"""`registry pull`: the verified, atomic client that keeps a serving folder at what a stage says."""
