import pathlib

import pytest
from twisted.python import usage

from streamlab import config
from streamlab.tap import ConfigOptions, Options, check_config_main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_defaults_load_and_are_typed():
    cfg = config.load(None)
    assert cfg.server.listen == "tcp:30000"
    assert cfg.server.session_ports == (30181, 30880)
    assert cfg.live.window_seconds == 36.0
    assert cfg.sessions.socket_body_bytes == 65536
    assert cfg.live.live_epoch.year == 2020


def test_shipped_file_documents_every_key():
    text = (ROOT / "etc" / "streamlab.conf").read_text()
    assert text.strip() == config.render_default_file().strip()
    cfg = config.load(str(ROOT / "etc" / "streamlab.conf"))
    assert cfg.redacted() == config.load(None).redacted()


@pytest.mark.parametrize("body,needle", [
    ("[server]\nlisten = nope\n", "[server] listen"),
    ("[server]\nfrobnicate = 1\n", "[server] frobnicate: unknown key"),
    ("[bogus]\na = 1\n", "[bogus]: unknown section"),
    ("[live]\nwindow_seconds = -3\n", "[live] window_seconds"),
    ("[shaping]\nbackend = magic\n", "[shaping] backend"),
    ("[server]\nsession_ports = 9-2\n", "[server] session_ports"),
])
def test_bad_values_fail_with_one_line_naming_the_key(tmp_path, body, needle):
    path = tmp_path / "c.conf"
    path.write_text(body)
    with pytest.raises(config.ConfigError) as err:
        config.load(str(path))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_overrides_file(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[live]\nwindow_seconds = 20\n")
    opts = Options()
    opts.parseOptions(["--config", str(path), "--window-seconds", "30", "--shaping-backend", "userspace",
                       "--media-dir", str(tmp_path / "m"), "--state-dir", str(tmp_path / "s")])
    cfg = opts.checked_config  # parsing loaded and checked it
    assert cfg is not None and cfg == config.load(opts["config"], opts.overrides())
    assert cfg.live.window_seconds == 30
    assert cfg.shaping.backend == "userspace"
    assert (tmp_path / "m").is_dir() and (tmp_path / "s").is_dir()


def test_relative_paths_resolve_against_base(tmp_path):
    cfg = config.load(str(ROOT / "etc" / "streamlab.dev.conf"), base_dir=str(tmp_path))
    assert cfg.paths.media_dir == str(tmp_path / "var" / "media")


def test_check_config_exit_codes(tmp_path, capsys):
    good = tmp_path / "g.conf"
    good.write_text(f"[paths]\nmedia_dir = {tmp_path}/m\nstate_dir = {tmp_path}/s\n")
    assert check_config_main(["--config", str(good)]) == 0
    assert '"media_dir"' in capsys.readouterr().out
    bad = tmp_path / "b.conf"
    bad.write_text("[server]\ntls = maybe\n")
    assert check_config_main(["--config", str(bad)]) == 1
    assert "[server] tls" in capsys.readouterr().err


def test_a_bad_config_is_a_usage_error_when_parsing_and_one_line_status_1_for_twistd(tmp_path):
    bad = tmp_path / "b.conf"
    bad.write_text("[jobs]\nencode_workers = many\n")
    with pytest.raises(usage.UsageError, match=r"config error: \[jobs\] encode_workers"):
        ConfigOptions().parseOptions(["--config", str(bad)])
    with pytest.raises(SystemExit) as stop:  # twistd would print its help and exit 0 on a UsageError
        Options().parseOptions(["--config", str(bad)])
    assert str(stop.value.code).startswith("streamlab: config error: [jobs] encode_workers")
    assert "\n" not in str(stop.value.code)


def test_check_config_flag_prints_and_exits_0_while_parsing(tmp_path, capsys):
    good = tmp_path / "g.conf"
    good.write_text(f"[paths]\nmedia_dir = {tmp_path}/m\nstate_dir = {tmp_path}/s\n")
    for options in (ConfigOptions(), Options()):
        with pytest.raises(SystemExit) as stop:
            options.parseOptions(["--config", str(good), "--check-config"])
        assert stop.value.code == 0
        assert '"media_dir"' in capsys.readouterr().out
