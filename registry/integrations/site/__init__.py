"""`registry site`: the static catalog of a registry."""
