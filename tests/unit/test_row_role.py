"""``RowRole.from_settings`` (which login ``productos migrate`` makes row-only, ``DB_APP_ROLE``) and the SCRAM
verifier's SASLprep, without a database (tests/integration/test_row_role.py runs both against PostgreSQL)."""

from __future__ import annotations

import base64
import re

import pytest

from productos.infra.db.roles import _saslprep
from productos.migrations import RowRole, scram_sha_256_verifier
from productos.settings import settings_from_values

OWNER = "postgresql://owner:0wner-pw@db.internal:5432/app?sslmode=require"


def role(**values: str | bool) -> RowRole | None:
    return RowRole.from_settings(settings_from_values(values))


def test_the_service_login_is_made_row_only_when_the_migration_logs_in_as_another_user() -> None:
    made = role(database_url="postgresql://app:s%40cret@proxy.internal:5432/app", database_migrate_url=OWNER)
    assert made is not None
    assert (made.name, made.password, made.iam) == ("app", "s@cret", False)
    # Its password is checked on the owner's server, straight, not through the proxy DATABASE_URL names.
    assert made.login_url == "postgresql://app:s%40cret@db.internal:5432/app?sslmode=require"
    assert "s@cret" not in repr(made) and "s%40cret" not in repr(made)


@pytest.mark.parametrize(
    "values",
    [
        {"database_url": "postgresql://app:pw@db.internal/app"},  # no DATABASE_MIGRATE_URL: one login
        {"database_url": "postgresql://owner:pw@proxy.internal/app", "database_migrate_url": OWNER},  # the same user
        {"database_url": "postgresql://app:pw@db.internal/app", "database_migrate_url": OWNER, "db_app_role": "NONE"},
        {"database_url": "sqlite:///./x.db", "database_migrate_url": OWNER},
        {"database_url": "postgresql://db.internal/app", "database_migrate_url": OWNER},  # no user: the OS's
    ],
)
def test_no_role_is_managed(values: dict[str, str]) -> None:
    assert role(**values) is None


def test_a_login_without_a_password_is_created_without_one_and_rds_iam_only_straight_to_the_database() -> None:
    direct = role(database_url="postgresql://app@db.internal/app", database_migrate_url=OWNER, db_iam_auth=True)
    assert direct is not None and (direct.password, direct.login_url, direct.iam) == (None, None, True)
    # Behind RDS Proxy the proxy logs in with the secret: rds_iam would make the role refuse its password.
    proxied = role(
        database_url="postgresql://app@proxy.internal/app",
        database_migrate_url=OWNER,
        db_iam_auth=True,
        db_pooler="transaction",
    )
    assert proxied is not None and proxied.iam is False


def test_db_app_role_is_auto_or_none() -> None:
    assert settings_from_values({}).db_app_role == "auto"
    with pytest.raises(ValueError, match="db_app_role"):
        settings_from_values({"db_app_role": "app"})


def test_the_verifier_has_postgresqls_form_and_a_fresh_salt_each_time() -> None:
    first, second = scram_sha_256_verifier("pencil"), scram_sha_256_verifier("pencil")
    form = re.compile(r"SCRAM-SHA-256\$4096:([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")
    for verifier in (first, second):
        found = form.fullmatch(verifier)
        assert found is not None
        assert [len(base64.b64decode(part)) for part in found.groups()] == [16, 32, 32]
        assert "pencil" not in verifier
    assert first != second
    salt = b"0123456789abcdef"
    assert scram_sha_256_verifier("pencil", salt=salt) == scram_sha_256_verifier("pencil", salt=salt)


@pytest.mark.parametrize(
    ("password", "prepared"),
    [
        # RFC 4013, section 3, and what PostgreSQL does where SASLprep refuses: the password as it is.
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("\u0007", "\u0007"),
        ("\u0627\u0031", "\u0627\u0031"),
        ("caf\u00e9\u2003", "caf\u00e9 "),  # a non-ASCII space becomes a space
    ],
)
def test_saslprep(password: str, prepared: str) -> None:
    assert _saslprep(password) == prepared
