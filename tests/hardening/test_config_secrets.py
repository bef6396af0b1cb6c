"""Secrets are never shown: `opsloop config show` (text and --json) with every secret set prints none of them,
settings' repr, str and JSON do not carry them, a bad settings file's error does not echo them, and the
places that need a secret read it only where it is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from cluster.masking import MASK, redact_url
from cluster.settings import Settings, SettingsError, load_settings

#: One value per secret setting, each unlike anything else in the output.
SECRETS = {
    "admin_token": "olp_admin-Sx7q1",
    "webhook_token": "hook-token-Pq92",
    "openai_api_key": "sk-openai-Lm55",
    "slack_bot_token": "xoxb-bot-Rt33",
    "slack_signing_secret": "signing-secret-Wv08",
    "alertmanager_token": "alertmanager-token-Jc38",
    "redfish_password": "bmc-pass-Tz61",
    "jira_token": "jira-token-Vb72",
    "servicenow_password": "snow-pass-Ue46",
    "pagerduty_routing_key": "pd-routing-key-Xr05",
}
#: Passwords and tokens inside URL settings.
URLS = {
    "redis_url": ("redis://default:redis-pass-Kd41@127.0.0.1:6390/0", "redis-pass-Kd41"),
    "webhook_url": ("https://bms.example/hook?site=a&token=url-token-Hh27", "url-token-Hh27"),
    "openai_base_url": ("http://svc:llm-pass-Yy64@127.0.0.1:8001/v1", "llm-pass-Yy64"),
    "otlp_endpoint": ("http://collector-token-Nn19@127.0.0.1:4318/v1/traces", "collector-token-Nn19"),
    "prometheus_url": ("http://viewer:prom-pass-Gq27@127.0.0.1:9090", "prom-pass-Gq27"),
}
EVERY_SECRET = [*SECRETS.values(), *(secret for _, secret in URLS.values())]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLOOP_")}
    env["OPSLOOP_DATA_DIR"] = str(tmp_path / "data")
    env.update({f"OPSLOOP_{k.upper()}": v for k, v in SECRETS.items()})
    env.update({f"OPSLOOP_{k.upper()}": url for k, (url, _) in URLS.items()})
    return env


def _opsloop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())", *args],
                          env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])


def _no_secret(text: str) -> None:
    leaked = [s for s in EVERY_SECRET if s in text]
    assert not leaked, f"shown: {leaked}"


def test_every_secret_like_setting_is_a_secret_str() -> None:
    """A new token, secret, password or key setting must be a SecretStr (or this test names it)."""
    secretish = {n for n in Settings.model_fields if {"token", "secret", "password", "key"} & set(n.split("_"))}
    assert secretish == set(SECRETS), "SECRETS above lists every secret setting"
    for name in secretish:
        assert SecretStr in getattr(Settings.model_fields[name].annotation, "__args__", ()), name


@pytest.mark.parametrize("fmt", [[], ["--json"]])
def test_config_show_prints_no_secret(tmp_path: Path, fmt: list[str]) -> None:
    done = _opsloop("config", "show", *fmt, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    _no_secret(done.stdout + done.stderr)
    if fmt:
        rows = {r["name"]: r for r in json.loads(done.stdout)}
        for name in SECRETS:
            assert rows[name]["value"] == MASK and rows[name]["source"] == f"env OPSLOOP_{name.upper()}"
        assert rows["redis_url"]["value"] == f"redis://default:{MASK}@127.0.0.1:6390/0"
        assert rows["webhook_url"]["value"] == f"https://bms.example/hook?site=a&token={MASK}"
        assert rows["otlp_endpoint"]["value"] == f"http://{MASK}@127.0.0.1:4318/v1/traces"
        assert rows["openai_model"]["value"] is None, "unset settings still show as unset"
    else:
        assert f"admin_token = {MASK!r}" in done.stdout and "127.0.0.1:6390" in done.stdout


def test_config_show_from_a_settings_file_prints_no_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "opsloop.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in SECRETS.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLOOP_")}
    env.update(OPSLOOP_CONFIG=str(cfg), OPSLOOP_DATA_DIR=str(tmp_path / "d"))
    done = _opsloop("config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    _no_secret(done.stdout + done.stderr)
    assert {r["name"]: r["source"] for r in json.loads(done.stdout)}["webhook_token"] == "config file"


def test_a_bad_settings_file_is_a_clear_error_without_the_values(tmp_path: Path) -> None:
    """A misspelt secret name is refused by name; the error does not echo the value (pydantic's would)."""
    cfg = tmp_path / "opsloop.yaml"
    cfg.write_text(f"admin_tokn: {SECRETS['admin_token']}\nport: {SECRETS['webhook_token']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLOOP_")}
    env.update(OPSLOOP_CONFIG=str(cfg), OPSLOOP_DATA_DIR=str(tmp_path / "d"))
    done = _opsloop("config", "show", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "admin_tokn: Extra inputs are not permitted" in done.stderr and "port:" in done.stderr, done.stderr
    _no_secret(done.stdout + done.stderr)
    with pytest.raises(SettingsError) as err:
        load_settings(config=cfg)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    _no_secret(str(err.value))


def test_settings_repr_str_and_json_carry_no_secret(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, **SECRETS, **{k: url for k, (url, _) in URLS.items()})
    for text in (repr(s), str(s), s.model_dump_json(exclude=set(URLS)), json.dumps(s.model_dump(mode="json",
                                                                                              exclude=set(URLS)))):
        _no_secret(text)
    for shown in (repr(s), str(s)):
        assert "redis://default:**********@127.0.0.1:6390/0" in shown, "URL passwords masked in repr too"
    assert s.admin_token is not None and s.admin_token.get_secret_value() == SECRETS["admin_token"]


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw-1@h:6379/0", f"redis://:{MASK}@h:6379/0"),
    ("https://h/x?api_key=k-1&x=1&Signature=s-1", f"https://h/x?api_key={MASK}&x=1&Signature={MASK}"),
    ("https://tok-1@h/x", f"https://{MASK}@h/x"),
    ("http://127.0.0.1:8000/hook", "http://127.0.0.1:8000/hook"),
    ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_reach_their_point_of_use(tmp_path: Path) -> None:
    """Masked everywhere, yet the CLI sends the real admin token and the LLM client the real API key."""
    from cluster.tokens import cli_token
    from serving.llm import ChatSpec, make_chat_model

    s = Settings(data_dir=tmp_path, **SECRETS)
    assert cli_token(s) == SECRETS["admin_token"]
    spec = ChatSpec("external", "m", 2048, "http://127.0.0.1:1/v1", s.openai_api_key)
    assert SECRETS["openai_api_key"] not in repr(spec)
    model = make_chat_model(spec)
    assert model.client.headers["Authorization"] == f"Bearer {SECRETS['openai_api_key']}"
    assert SECRETS["openai_api_key"] not in repr(model.client.headers)



def test_url_lists_show_masked(tmp_path: Path) -> None:
    from cluster.settings import describe_settings

    s = Settings(data_dir=tmp_path, redfish_urls=["n01=https://admin:bmc-pass-Uu31@bmc-01.example"],
                 dcgm_urls=["http://scrape:dcgm-pass-Vv42@dgx-01:9400/metrics"])
    rows = {r["name"]: r["value"] for r in describe_settings(s)}
    assert "bmc-pass-Uu31" not in rows["redfish_urls"] and rows["redfish_urls"].startswith("n01=https://admin:")
    assert "dcgm-pass-Vv42" not in rows["dcgm_urls"] and "dgx-01:9400" in rows["dcgm_urls"]
