"""A refused setting never echoes a value: the database URL (its password), the JWT
secret and the metrics token are SecretStr, and validation errors hide their input."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

PASSWORD = "hunter2-very-secret-password"
SHORT_SECRET = "short-jwt-secret-xyz"
URL = f"postgresql://okr:{PASSWORD}@db.internal:5432/okr"


def test_a_refused_production_setting_does_not_echo_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(env="production", database_url=URL, jwt_secret=SHORT_SECRET, data_dir=tmp_path)
    text = str(refused.value)  # what a traceback or a log line shows
    assert "OKR_JWT_SECRET of at least 32 characters" in text
    assert PASSWORD not in text and SHORT_SECRET not in text


def test_a_badly_typed_setting_does_not_echo_its_value(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(pool_size=f"ten-{PASSWORD}", data_dir=tmp_path)  # type: ignore[arg-type]
    assert "pool_size" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_secrets_are_not_shown_by_repr(tmp_path: Path) -> None:
    settings = Settings(
        database_url=URL, jwt_secret="x" * 40, metrics_token=PASSWORD, data_dir=tmp_path
    )
    assert PASSWORD not in repr(settings) and "x" * 40 not in repr(settings)
    assert settings.resolved_jwt_secret() == "x" * 40
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == URL


def test_okr_refusing_production_settings_prints_no_secret(bin_okr: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OKR_ENV": "production",
        "OKR_DATABASE_URL": URL,
        "OKR_JWT_SECRET": SHORT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [bin_okr, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "OKR_JWT_SECRET" in output
    assert PASSWORD not in output and SHORT_SECRET not in output
