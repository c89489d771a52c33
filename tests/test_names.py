"""Model names and semantic versions."""

from __future__ import annotations

import pytest

from registry.errors import UsageError
from registry.files.names import Version, check_model_name, check_version, parse_ref


@pytest.mark.parametrize("name", ["a", "credit-approval", "m2", "0day", "a" * 64])
def test_valid_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "credit approval", "../x", "a/b", "..", "-a", "a" * 65,
                                  "cr\u0435dit", "\uff41", "a_b", "a.b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(UsageError, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize("text", ["1.0", "v1.0.0", "01.0.0", "1.0.0/..", "1.0.0 ", "1.0.0-", "1.0.0-01"])
def test_invalid_versions(text: str) -> None:
    with pytest.raises(UsageError, match="invalid version"):
        check_version(text)


def test_semver_precedence() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0", "2.0.0"]
    assert sorted(reversed(ordered), key=Version.parse) == ordered


def test_bump() -> None:
    assert str(Version.parse("1.2.3").bump("minor")) == "1.3.0"
    assert str(Version.parse("1.2.3").bump("major")) == "2.0.0"
    assert str(Version.parse("1.3.0-rc.1").bump("patch")) == "1.3.0"


def test_parse_ref() -> None:
    assert parse_ref("credit-approval@1.2.0") == ("credit-approval", "1.2.0")
    assert parse_ref("credit-approval") == ("credit-approval", None)
    with pytest.raises(UsageError):
        parse_ref("credit-approval@")


FOLDER_NAMES = ["1.0.0", "01.0.0", "1.0", "1.0.0.0", "1.2.3-rc.1", "1.2.3+b", "a.b.c", "1.\u0660.0", "0.0.0",
                "10.20.30", "1.0.0-", "", "1..0", "2.0.0-rc.1+build.5", "1.0.0-01", "model.yaml", "stages.yaml",
                "1.0.0\n2.0.0", " 1.0.0", "1.0.0 ", "v1.0.0", "1.0.0-rc.1\n1.0.0", "9.9.9-"]


@pytest.mark.parametrize("text", FOLDER_NAMES)
def test_folder_name_keys_agree_with_the_parser(text: str) -> None:
    from registry.repo.registry import version_folders

    expected = [(Version.parse(text).sort_key(), text)] if Version.is_valid(text) else []
    assert version_folders([text]) == expected


def test_a_listing_keys_every_version_folder_once() -> None:
    from registry.repo.registry import version_folders

    got = version_folders(FOLDER_NAMES)
    expected = [(Version.parse(t).sort_key(), t) for t in FOLDER_NAMES if Version.is_valid(t)]
    assert sorted(got) == sorted(expected)
    assert max(got)[1] == "10.20.30"
