"""Station configuration: files, environment, CLI overrides, checks, secrets."""

from __future__ import annotations

import argparse
import logging

import pytest

from edge.config import (
    ConfigError,
    StationConfig,
    check_config,
    cli_overrides,
    load_config,
    parse_mqtt_url,
    redact_url,
    run_config_check,
)

YAML = """\
station: line3-st2
mqtt:
  url: mqtt://broker.local:1884
  protocol: 3.1.1
  keepalive: 15
outbox:
  max_messages: 500
camera:
  source: synthetic
  realsense:
    fps: 15
    filters:
      spatial: true
runtime:
  backend: onnxruntime
"""

TOML = """\
station = "line3-st2"

[mqtt]
url = "mqtt://broker.local:1884"
protocol = "3.1.1"
keepalive = 15

[outbox]
max_messages = 500

[camera]
source = "synthetic"

[camera.realsense]
fps = 15
filters = { spatial = true }

[runtime]
backend = "onnxruntime"
"""


def test_defaults_are_valid_and_fill_in_the_station():
    cfg = StationConfig(station="st7")
    assert cfg.topic("verdict") == "trd/st7/verdict"
    assert cfg.client_id() == "trd-edge-st7"
    assert "st7" in str(cfg.outbox_path()) and "~" not in str(cfg.outbox_path())
    assert cfg.mqtt.protocol == "5" and cfg.outbox.when_full == "drop_oldest"
    # Every field documents itself (the config reference is generated from these).
    for section in (cfg, cfg.mqtt, cfg.mqtt.tls, cfg.outbox, cfg.publish, cfg.runtime):
        for name, info in type(section).model_fields.items():
            assert info.description, f"{type(section).__name__}.{name} has no description"


def test_yaml_and_toml_load_the_same(tmp_path):
    (tmp_path / "a.yaml").write_text(YAML)
    (tmp_path / "a.toml").write_text(TOML)
    from_yaml = load_config(tmp_path / "a.yaml", env={})
    from_toml = load_config(tmp_path / "a.toml", env={})
    assert from_yaml == from_toml
    assert from_yaml.mqtt.protocol == "3.1.1" and from_yaml.mqtt.keepalive == 15
    assert from_yaml.camera.realsense.fps == 15 and from_yaml.camera.realsense.filters.spatial
    assert from_yaml.topic("status") == "trd/line3-st2/status"


def test_precedence_file_then_env_then_cli(tmp_path):
    (tmp_path / "a.yaml").write_text(YAML)
    env = {
        "TRD_EDGE_MQTT__KEEPALIVE": "20",
        "TRD_EDGE_RUNTIME__BACKEND": "tensorrt",
        "TRD_EDGE_MQTT_USERNAME": "env-user",
        "TRD_EDGE_MQTT_PASSWORD": "env-secret",
        "TRD_EDGE_UNRELATED_TOOL": "ignored",
        "PATH": "/bin",
    }
    cfg = load_config(
        tmp_path / "a.yaml", env=env, overrides={"runtime.backend": "auto", "station": None}
    )
    assert cfg.mqtt.keepalive == 20  # env beats file
    assert cfg.runtime.backend == "auto"  # CLI beats env
    assert cfg.station == "line3-st2"  # None overrides are ignored
    assert cfg.mqtt.username == "env-user"
    assert cfg.mqtt.password.get_secret_value() == "env-secret"
    # Credentials in a CLI URL beat the environment's.
    cfg = load_config(
        tmp_path / "a.yaml", env=env, overrides={"mqtt": {"url": "mqtt://cli:cli-pw@h:1"}}
    )
    assert cfg.mqtt.username == "cli" and cfg.mqtt.password.get_secret_value() == "cli-pw"
    assert cfg.mqtt.url == "mqtt://h:1"


def test_cli_overrides_maps_run_flags():
    args = argparse.Namespace(mqtt="mqtt://h:2", station="s9", backend=None, bundle=None)
    cfg = load_config(None, env={}, overrides=cli_overrides(args))
    assert cfg.mqtt.url == "mqtt://h:2" and cfg.station == "s9" and cfg.runtime.backend == "auto"


def test_secrets_never_appear_in_string_forms(caplog):
    cfg = load_config(None, env={}, overrides={"mqtt.url": "mqtts://ann:hunter2@h:8883"})
    ep = cfg.mqtt.endpoint()
    assert ep.password.get_secret_value() == "hunter2" and ep.username == "ann"
    logging.getLogger("test").info("config %s %r endpoint %s %r", cfg, cfg, ep, ep)
    texts = [str(cfg), repr(cfg), cfg.model_dump_json(), str(ep), repr(ep), caplog.text]
    for text in texts:
        assert "hunter2" not in text
    assert redact_url("mqtt://ann:hunter2@h:1") == "mqtt://ann:***@h:1"
    # A bad URL's error message redacts the password too.
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"mqtt.url": "http://ann:hunter2@h:1"})
    assert "hunter2" not in str(info.value) and "mqtt.url" in str(info.value)


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://h:1883", "unsupported scheme 'http'"),
        ("h:1883", "scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h:abc", "port"),
        ("mqtt://h:0", "port"),
        ("mqtt://h:1883/trd", "path"),
    ],
)
def test_parse_mqtt_url_errors(url, message):
    with pytest.raises(ValueError, match=message):
        parse_mqtt_url(url)


def test_parse_mqtt_url_defaults():
    assert (parse_mqtt_url("mqtt://h").port, parse_mqtt_url("mqtts://h").port) == (1883, 8883)
    ep = parse_mqtt_url("mqtts://u%40x:p%3Aw@[::1]:9000")
    assert (ep.host, ep.port, ep.tls, ep.username) == ("::1", 9000, True, "u@x")
    assert ep.password.get_secret_value() == "p:w"


def test_check_lists_every_problem_with_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "station: 'a/b'\n"  # line 1
        "mqtt:\n"
        "  url: mqtt://h:70000\n"  # line 3
        "  keepalive: 1\n"  # line 4
        "  tls:\n"
        "    ca: /nonexistent/ca.pem\n"
        "outbox:\n"
        "  max_mesages: 10\n"  # line 8: typo
        "runtime:\n"
        "  backend: cuda\n"  # line 10
    )
    problems = check_config(bad)
    text = "\n".join(problems)
    assert len(problems) >= 5, text
    for key, line in [
        ("station", 1),
        ("mqtt.url", 3),
        ("mqtt.keepalive", 4),
        ("outbox.max_mesages", 8),
        ("runtime.backend", 10),
        ("mqtt.tls.ca", 6),  # a missing file is reported beside the schema errors
    ]:
        assert any(p.startswith(key) and f"line {line}" in p for p in problems), (key, text)
    assert "did you mean 'max_messages'" in text


def test_check_reports_missing_files_and_tls_mismatch(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[mqtt]\nurl = "mqtts://h"\n[mqtt.tls]\nca = "/nonexistent/ca.pem"\n'
        '[camera]\nsource = "file:/nonexistent/rec.db3"\n'
    )
    problems = check_config(cfg)
    assert any("mqtt.tls.ca" in p and "not found" in p for p in problems), problems
    assert any("camera.source" in p for p in problems), problems
    plain = tmp_path / "p.yaml"
    plain.write_text("mqtt:\n  url: mqtt://h\n  tls:\n    insecure: true\n")
    assert any("mqtts://" in p for p in check_config(plain))


def test_check_unreadable_files(tmp_path):
    assert "not found" in check_config(tmp_path / "missing.yaml")[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt:\n  url: [unclosed\n")
    assert "not valid YAML" in check_config(broken)[0]
    (tmp_path / "x.ini").write_text("")
    assert "unsupported" in check_config(tmp_path / "x.ini")[0]


def test_run_config_check_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(YAML)
    assert run_config_check(argparse.Namespace(check=str(good))) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  keepalive: -1\n  protocol: 4\n")
    assert run_config_check(argparse.Namespace(check=str(bad))) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "mqtt.keepalive" in out and "mqtt.protocol" in out


def test_validation_rules():
    with pytest.raises(ConfigError, match="topic_prefix"):
        load_config(None, env={}, overrides={"mqtt.topic_prefix": "trd/+/"})
    with pytest.raises(ConfigError, match="placeholder"):
        load_config(None, env={}, overrides={"mqtt.topic_prefix": "trd/{line}/"})
    with pytest.raises(ConfigError, match="tls.key"):
        load_config(None, env={}, overrides={"mqtt.tls.cert": "/c.pem"})
    with pytest.raises(ConfigError, match="camera.source"):
        load_config(None, env={}, overrides={"camera.source": "webcam"})
    cfg = load_config(None, env={}, overrides={"mqtt.topic_prefix": "plant/{station}"})
    assert cfg.topic("verdict") == "plant/station-1/verdict"
