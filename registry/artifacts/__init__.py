"""What a weights file is and whether it is safe: the one sniffer, the pickle scan, format checks and conversion."""
