"""OpenSSF Model Signing (OMS) signatures: hashing a version folder, the signed bundle, keys, verification."""
