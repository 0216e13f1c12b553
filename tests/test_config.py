"""Settings: layering and errors that name the setting and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from goflypy.config import ConfigError, example_toml, load


def test_layers_rise_from_default_to_file_to_env_to_flag(tmp_path: Path) -> None:
    file = tmp_path / "goflypy.toml"
    file.write_text(
        'port = 9000\nshop_name = "果园"\nhost = "0.0.0.0"\n', encoding="utf-8"
    )
    env = {"GOFLY_PORT": "9100", "GOFLY_HOST": "127.0.0.2"}
    config = load(file, {"port": "9200"}, environ=env)
    assert config.port == 9200 and config.sources["port"] == "command line"
    assert config.host == "127.0.0.2" and config.sources["host"] == "GOFLY_HOST"
    assert config.shop_name == "果园"
    assert config.sources["shop_name"] == f"config file {file}"
    assert (
        config.max_message_chars == 2000
        and config.sources["max_message_chars"] == "default"
    )


@pytest.mark.parametrize(
    ("flags", "environ", "needle"),
    [
        ({"port": "http"}, {}, "'port' from command line"),
        ({}, {"GOFLY_PORT": "70000"}, "'port' from GOFLY_PORT"),
        ({"log_level": "loud"}, {}, "'log_level' from command line"),
        (
            {},
            {"GOFLY_SECURE_COOKIES": "maybe"},
            "'secure_cookies' from GOFLY_SECURE_COOKIES",
        ),
        (
            {"robot_answer_threshold": "0.3", "robot_suggest_threshold": "0.5"},
            {},
            "'robot_suggest_threshold'",
        ),
    ],
)
def test_wrong_values_name_the_setting_and_source(
    flags: dict[str, str], environ: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        load(None, flags, environ=environ)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 'x'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"'port' from config file {bad}"):
        load(bad, {}, environ={})
    bad.write_text("colour = 'blue'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load(bad, {}, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml", {}, environ={})


def test_example_file_is_generated_from_settings() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config.example.toml"
    assert shipped.read_text(encoding="utf-8") == example_toml()
