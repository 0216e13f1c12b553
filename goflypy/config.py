"""Settings, declared once.

Every setting lives in SETTINGS. Its value comes from, in rising order:
the default, the TOML config file, a ``GOFLY_<NAME>`` environment variable,
and a command-line flag. A wrong value fails at start-up naming the setting
and the source it came from.
"""

from __future__ import annotations

import os
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "GOFLY_"


class ConfigError(Exception):
    """A setting has a value that cannot be used."""


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer")
    return int(raw)


def _float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number")
    return float(raw)


def _str(raw: Any) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ValueError("expected a string")
    return str(raw)


def _str_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise ValueError("expected a list of strings or a comma-separated string")


def _template_fields(raw: Any) -> tuple[str, list[str]]:
    """A ``{name}`` template and its field names; nothing fancier is allowed."""
    text = _str(raw)
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{{{name}}} is not a plain {{name}} field")
        names.append(name)
    return text, names


def _reply_template(raw: Any) -> str:
    return _template_fields(raw)[0]


def _order_url(raw: Any) -> str:
    text, names = _template_fields(raw)
    if not text:
        return text
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    if set(names) != {"order_id", "shopper_id"}:
        raise ValueError("the URL must hold {order_id} and {shopper_id}, only")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False

    @property
    def kind(self) -> str:
        kinds: dict[Callable[[Any], Any], str] = {
            _bool: "bool",
            _int: "int",
            _float: "float",
            _str_list: "list",
        }
        return kinds.get(self.parse, "str")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", _str, "address to listen on"),
    Setting("port", 8080, _int, "TCP port to listen on", 1, 65535),
    Setting("data_dir", "./goflypy-data", _str, "directory holding the store"),
    Setting("public_url", "", _str, "URL shoppers reach the server at, if proxied"),
    Setting(
        "log_level",
        "info",
        _str,
        "logging level",
        choices=("debug", "info", "warning", "error"),
    ),
    Setting("shop_name", "鲜果小铺", _str, "shop name shown in the widget"),
    Setting(
        "welcome_text",
        "您好！我是智能客服，请问有什么可以帮您？",
        _str,
        "first robot message of a new conversation",
    ),
    Setting(
        "offline_text",
        "现在没有客服在线。请留下您的问题和联系方式，客服上线后会第一时间回复您。",
        _str,
        "told to a shopper who asks for a human while no agent is online",
    ),
    Setting(
        "widget_origins",
        [],
        _str_list,
        "extra origins (https://shop.example) allowed to open the visitor socket",
    ),
    Setting(
        "robot_answer_threshold",
        0.46,
        _float,
        "score at or above which the robot answers",
        0.0,
        1.0,
    ),
    Setting(
        "robot_suggest_threshold",
        0.42,
        _float,
        "score at or above which the robot suggests entries",
        0.0,
        1.0,
    ),
    Setting(
        "robot_margin",
        0.02,
        _float,
        "suggest instead of answering when the runner-up is this close",
        0.0,
        1.0,
    ),
    Setting("max_message_chars", 2000, _int, "longest message, in characters", 1),
    Setting("max_frame_bytes", 65536, _int, "largest WebSocket frame", 1024),
    Setting(
        "visitor_rate_per_min",
        30,
        _int,
        "messages one visitor (all devices) may send per minute",
        1,
    ),
    Setting(
        "agent_rate_per_min", 120, _int, "messages an agent may send per minute", 1
    ),
    Setting(
        "max_connections", 18000, _int, "open sockets before new ones are refused", 1
    ),
    Setting("send_queue_frames", 256, _int, "frames queued for a slow socket", 8),
    Setting("heartbeat_s", 25, _int, "WebSocket ping interval in seconds", 5, 300),
    Setting(
        "ping_interval_s",
        20.0,
        _float,
        "seconds between server pings on a quiet socket; longer on slow links",
        0.05,
        300.0,
    ),
    Setting(
        "ping_timeout_s",
        10.0,
        _float,
        "longest wait for a pong; fast links get a shorter one from their RTT",
        0.05,
        300.0,
    ),
    Setting("frames_per_s", 10, _int, "frames one socket may send per second", 1),
    Setting(
        "ip_rate_per_min",
        300,
        _int,
        "messages all visitors of one IP may send per minute",
        1,
    ),
    Setting(
        "connects_per_ip_per_min",
        120,
        _int,
        "new sockets one IP may open per minute",
        1,
    ),
    Setting(
        "sockets_per_ip",
        1000,
        _int,
        "open sockets one IP may hold at once (mobile carriers share addresses)",
        1,
    ),
    Setting(
        "hello_timeout_s",
        30.0,
        _float,
        "seconds a new visitor socket may stay open without saying hello",
        0.5,
    ),
    Setting(
        "new_visitors_per_ip_per_min",
        60,
        _int,
        "new visitors one IP may start per minute",
        1,
    ),
    Setting(
        "trusted_proxies",
        [],
        _str_list,
        "proxy addresses or networks (10.0.0.0/8) whose X-Forwarded-For is believed",
    ),
    Setting("session_hours", 12, _int, "console sign-in lifetime in hours", 1),
    Setting(
        "map_size_mb",
        64,
        _int,
        "initial LMDB map size in MiB; it grows by itself",
        1,
    ),
    Setting("commit_batch", 256, _int, "most writes grouped into one commit", 1),
    Setting(
        "max_map_mb", 0, _int, "largest the LMDB map may grow, in MiB (0: no cap)", 0
    ),
    Setting(
        "robot_idle_close_minutes",
        30.0,
        _float,
        "close conversations only the robot has served after this idle time (0: never)",
        0.0,
    ),
    Setting(
        "archive_after_hours",
        72.0,
        _float,
        "archive conversations idle this long (0: never)",
        0.0,
    ),
    Setting(
        "archive_interval_s", 60.0, _float, "seconds between archiver passes", 0.05
    ),
    Setting("retention_days", 0, _int, "delete archives idle this long (0: keep)", 0),
    Setting(
        "archive_max_frame_mb", 64, _int, "largest archive frame read or written", 1
    ),
    Setting(
        "encryption_key_file",
        "",
        _str,
        "SM4 key file (VERSION:HEX lines); GOFLY_SM4_KEY overrides; empty: off",
    ),
    Setting(
        "identity_secret_file",
        "",
        _str,
        "file holding the shop's HMAC secret for verified shoppers; "
        "GOFLY_IDENTITY_SECRET overrides; empty: off",
    ),
    Setting(
        "identity_max_age_s",
        86400,
        _int,
        "seconds a signed shopper identity stays valid after its ts",
        60,
        30 * 86400,
    ),
    Setting(
        "order_url",
        "",
        _order_url,
        "shop's order endpoint, e.g. https://shop.example/api/orders/{order_id}"
        "?shopper={shopper_id}; empty: order questions go to a human",
    ),
    Setting(
        "order_timeout_s", 3.0, _float, "seconds per order-endpoint request", 0.1, 60.0
    ),
    Setting("order_retries", 1, _int, "order-endpoint retries after a failure", 0, 5),
    Setting(
        "order_breaker_failures",
        5,
        _int,
        "failed order requests in a row that stop lookups for a cool-down",
        1,
    ),
    Setting(
        "order_breaker_cooldown_s",
        30.0,
        _float,
        "seconds order lookups stay off after the breaker opens",
        1.0,
        3600.0,
    ),
    Setting(
        "order_reply_template",
        "订单 {order_id} 的状态：{status}。",
        _reply_template,
        "order answer; {order_id} and the endpoint's JSON fields fill it",
    ),
    Setting(
        "secure_cookies",
        False,
        _bool,
        "mark cookies Secure (set when served over HTTPS)",
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


@dataclass(slots=True)
class Config:
    """Effective settings with the source of each value."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data_path(self) -> Path:
        return Path(self.values["data_dir"]).expanduser()

    def masked(self) -> dict[str, Any]:
        """Settings for the start-up log line, secrets hidden."""
        return {
            name: ("***" if BY_NAME[name].secret else value)
            for name, value in self.values.items()
        }


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    try:
        value = setting.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {raw!r} is not valid ({exc})"
        ) from None
    if setting.choices and value not in setting.choices:
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {value!r} is not one of "
            f"{', '.join(setting.choices)}"
        )
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {value!r} is below "
            f"{setting.minimum:g}"
        )
    if setting.maximum is not None and value > setting.maximum:
        raise ConfigError(
            f"setting {setting.name!r} from {source}: {value!r} is above "
            f"{setting.maximum:g}"
        )
    return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None

    unknown = sorted(set(data) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    return data


def load(
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective configuration; raises ConfigError naming the source."""
    environ = os.environ if environ is None else environ
    values = {setting.name: setting.default for setting in SETTINGS}
    sources = {setting.name: "default" for setting in SETTINGS}

    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_file:
        layers.append((f"config file {config_file}", _read_file(Path(config_file))))
    env_values = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in BY_NAME
        if ENV_PREFIX + name.upper() in environ
    }
    layers.append(("environment", env_values))
    layers.append(
        ("command line", {k: v for k, v in (flags or {}).items() if v is not None})
    )

    for source, layer in layers:
        for name, raw in layer.items():
            setting = BY_NAME[name]
            label = f"{ENV_PREFIX}{name.upper()}" if source == "environment" else source
            values[name] = _coerce(setting, raw, label)
            sources[name] = label

    if values["robot_suggest_threshold"] > values["robot_answer_threshold"]:
        raise ConfigError(
            "setting 'robot_suggest_threshold' "
            f"({sources['robot_suggest_threshold']}) is above "
            f"'robot_answer_threshold' ({sources['robot_answer_threshold']})"
        )
    return Config(values, sources)


def example_toml() -> str:
    """The sample config file, generated from SETTINGS."""
    lines = ["# goflypy configuration. Every setting is optional.", ""]
    for setting in SETTINGS:
        lines.append(f"# {setting.help}")
        default = setting.default
        if isinstance(default, bool):
            rendered = "true" if default else "false"
        elif isinstance(default, str):
            rendered = '"' + default.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif isinstance(default, list):
            rendered = "[" + ", ".join(f'"{item}"' for item in default) + "]"
        else:
            rendered = repr(default)
        lines.append(f"# {setting.name} = {rendered}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
