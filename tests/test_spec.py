"""The campaign spec: every problem is one line with the file, the field path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import audience, responsys_spec, write_spec
from volley.campaign import Campaign, check_run_key
from volley.errors import SecretError, SpecError


@pytest.fixture
def audience_file(tmp_path: Path) -> Path:
    path = tmp_path / "audience.csv"
    audience(3).write_csv(path)
    return path


def load(tmp_path: Path, spec: dict[str, object]) -> Campaign:
    return Campaign.load(write_spec(tmp_path / "spec.yaml", spec))


@pytest.mark.usefixtures("responsys_credentials")
def test_a_good_spec_loads_with_the_connector_defaults(tmp_path: Path, audience_file: Path) -> None:
    campaign = load(tmp_path, responsys_spec(audience_file))
    assert campaign.connector.name == "responsys"
    assert campaign.batch_rows == 200
    assert campaign.policy().concurrency == 4


@pytest.mark.usefixtures("responsys_credentials")
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"vendor": "mailchimp"}, "vendor: Value error, unknown vendor 'mailchimp'"),
        ({"limits": {"concurrency": 0}}, "limits.concurrency: Input should be greater than or equal to 1"),
        ({"batch_size": 500}, "batch_size: responsys takes at most 200 recipients a request"),
        ({"vendor_params": {"event": "Back In Stock"}}, "vendor_params.event: String should match pattern"),
        ({"vendor_params": {"event": "X", "list": {"folder": "F"}}}, "vendor_params.list: Value error"),
        ({"connection": {"base_url": "ftp://x"}}, "connection.base_url: String should match pattern"),
        (
            {"connection": {"base_url": "http://x", "user_name": "volley", "password": {"env": "P"}}},
            "connection.user_name",
        ),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_specs_name_the_field(
    tmp_path: Path, audience_file: Path, change: dict[str, object], expected: str
) -> None:
    spec = responsys_spec(audience_file)
    spec.update(change)
    with pytest.raises(SpecError) as caught:
        load(tmp_path, spec)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "spec.yaml") + ": ")
    assert expected in message
    assert "\n" not in message


def test_secrets_come_from_the_environment_and_missing_ones_are_named(
    tmp_path: Path, audience_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONSYS_USER", "volley")
    monkeypatch.delenv("RESPONSYS_PASSWORD", raising=False)
    with pytest.raises(SecretError, match=r"connection.password: environment variable RESPONSYS_PASSWORD is not set"):
        load(tmp_path, responsys_spec(audience_file))


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: line \d+: "):
        Campaign.load(broken)
    with pytest.raises(SpecError, match=r"no such spec file"):
        Campaign.load(tmp_path / "absent.yaml")


def test_run_keys_are_safe_directory_names() -> None:
    assert check_run_key("2026-11-23") == "2026-11-23"
    with pytest.raises(SpecError, match="--run-key"):
        check_run_key("../etc")
