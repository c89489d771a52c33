"""The signing commands (keys generate, sign, verify): loaded only when one of them runs."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli.main import (  # the helpers the command modules share
    _next_step,
    _open,
    _print_json,
    _version_ref,
    _where,
    echo,
    json_option,
)


@click.group(name="keys")
def keys_group() -> None:
    """Signing keys: ECDSA P-256 key pairs in PEM files."""


@keys_group.command(name="generate")
@click.option("--out", "out", metavar="PREFIX", type=click.Path(path_type=Path), default=Path("registry-signing"),
              show_default=True, help="Write PREFIX.key (private, mode 0600) and PREFIX.pub (public).")
@click.option("--passphrase-env", metavar="VAR",
              help="Encrypt the private key with the passphrase in environment variable VAR "
                   "(default: REGISTRY_KEY_PASSPHRASE when it is set; otherwise unencrypted).")
@json_option
def keys_generate(out: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Make a new signing key pair."""
    from registry.signing import keys

    made = keys.generate(out, keys.passphrase(passphrase_env))
    if as_json:
        _print_json({"private_key": str(made.private_key), "public_key": str(made.public_key),
                     "key_id": made.key_id, "encrypted": made.encrypted, "warnings": list(made.warnings)})
        return
    protection = "encrypted with your passphrase" if made.encrypted else "not encrypted"
    echo(f"Private key: {made.private_key} (mode 0600, {protection}; keep it secret)")
    echo(f"Public key:  {made.public_key} (key id {made.key_id[:16]})")
    for warning in made.warnings:
        echo(f"warning: {warning}", err=True)
    echo("Next: commit the .pub file into the registry (e.g. keys/) and list it under trusted_keys "
         "in registry.yaml")


@click.command(name="sign")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="The private key (PREFIX.key).")
@click.option("--passphrase-env", metavar="VAR",
              help="Environment variable holding the key's passphrase (default: REGISTRY_KEY_PASSPHRASE).")
@click.option("--force", is_flag=True, help="Replace an existing signature.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def sign_command(ref: str, key: Path, passphrase_env: str | None, force: bool, no_branch: bool, push: bool,
                 as_json: bool) -> None:
    """Sign a registered version, in a commit of its own on branch sign/NAME/VERSION."""
    from registry.changes import sign
    from registry.signing import keys

    name, version = _version_ref(ref)
    reg = _open()
    done = sign.sign_version(reg, name, version, key, passphrase=keys.passphrase(passphrase_env), force=force,
                             no_branch=no_branch, push=push)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "branch": done.branch, "commit": done.commit,
                     "key_id": done.key_id, "files": list(done.files), "replaced": done.replaced})
        return
    verb = "Re-signed" if done.replaced else "Signed"
    echo(f"{verb} {done.name}@{done.version} with key {done.key_id[:16]} {_where(done.branch)} (commit {done.commit[:8]})")
    echo(f"  {len(done.files)} files: {', '.join(done.files)}")
    _next_step(done.branch, push)


@click.command(name="verify")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--trusted-keys", "trusted_keys", type=click.Path(path_type=Path), metavar="FILE",
              help="Public keys to trust (one or more PEM); default: registry.yaml trusted_keys.")
@click.option("--signature", "signature", type=click.Path(path_type=Path), metavar="FILE",
              help="A signature bundle to check instead of the version's signature.json.")
@json_option
def verify_command(ref: str, trusted_keys: Path | None, signature: Path | None, as_json: bool) -> None:
    """Check a version's signature against trusted keys; exit 1 with the reason if it fails."""
    from registry.signing import verify as sign

    name, version = _version_ref(ref)
    verified = sign.verify_version(_open(), name, version, keys_file=trusted_keys, signature=signature)
    if as_json:
        _print_json(verified.as_json())
        return
    echo(f"{verified.name}@{verified.version}: signature verified by key {verified.key_id[:16]} "
         f"({verified.key_source})")
    echo(f"  {len(verified.files)} files: {', '.join(verified.files)}")
