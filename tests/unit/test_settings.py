"""Settings validation: ``db.listen_url``, and no rejected value (a URL with its
password) repeated in the error."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskhub_api.settings import DatabaseSettings, Settings

SECRET = "hunter2-secret"


class TestListenUrl:
    def test_unset_means_the_relay_listens_on_db_url(self) -> None:
        assert DatabaseSettings().listen_url is None

    @pytest.mark.parametrize(
        "url",
        [
            f"postgresql+asyncpg://taskhub:{SECRET}@taskhub-pg-rw.ns.svc:5432/taskhub",
            f"postgresql://taskhub:{SECRET}@10.0.0.5/taskhub",
        ],
    )
    def test_a_postgresql_url_with_a_host_is_taken(self, url: str) -> None:
        assert DatabaseSettings(listen_url=url).listen_url == url

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            (f"redis://:{SECRET}@127.0.0.1:6379/0", "must be a postgresql:// URL, not redis://"),
            (f"taskhub-pg-rw:{SECRET}", "is not a URL"),
            (f"postgresql+asyncpg://taskhub:{SECRET}@taskhub-pg-rw:port/taskhub", "is not a URL"),
            (f"postgresql+asyncpg://taskhub:{SECRET}@/taskhub", "names no host"),
        ],
    )
    def test_a_bad_url_is_refused_without_its_password(
        self, url: str, message: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TASKHUB_DB__LISTEN_URL", url)
        with pytest.raises(ValidationError, match=r"db\.listen_url") as raised:
            Settings()
        assert message in str(raised.value)
        assert SECRET not in str(raised.value)
        with pytest.raises(ValidationError) as direct:
            DatabaseSettings(listen_url=url)
        assert SECRET not in str(direct.value)

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        url = "postgresql+asyncpg://postgres@127.0.0.1:55442/taskhub"
        monkeypatch.setenv("TASKHUB_DB__LISTEN_URL", url)
        assert Settings().db.listen_url == url
