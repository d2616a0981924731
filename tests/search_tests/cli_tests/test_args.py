"""The ``hpsearch`` parser without running a command: typed argument helpers, the shared flags,
defaults read from search.study.config, and flags that must be spelt out (no training, no database)."""

from __future__ import annotations

import argparse
import math

import pytest

from search.cli.main import build_parser
from search.cli.args import bound, count, number, port, trial_numbers, trial_states, whole_number
from search.study.config import DEFAULT_STUDY, DEFAULT_TRIALS, HOLDOUT_SIZE, StudyConfig

#: Every command line that reaches a command, and whether it takes --storage.
COMMANDS = [
    (["run"], True), (["launch"], True), (["worker"], True), (["init"], True),
    (["query", "studies"], True), (["query", "trials"], True), (["query", "best"], True), (["query", "top"], True),
    (["query", "curves"], True), (["query", "follow"], True), (["query", "summary"], True),
    (["dashboard"], True), (["landscape"], True),
    (["db", "url"], False), (["db", "start"], False), (["db", "stop"], False), (["db", "status"], False), (["db", "views"], True),
]


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("helper, text, value", [
    (whole_number, "12", 12), (whole_number, "-3", -3), (count, "0", 0), (count, "7", 7),
    (number, "1e-3", 1e-3), (number, "-inf", -math.inf), (bound, "inf", math.inf), (bound, "0.5", 0.5),
    (port, "8080", 8080), (trial_numbers, "3, 7,12", [3, 7, 12]), (trial_numbers, "", []),
    (trial_states, "complete, Pruned", ["COMPLETE", "PRUNED"]), (trial_states, "fail", ["FAIL"]),
])
def test_a_typed_helper_reads_good_text(helper, text, value):
    assert helper(text) == value


@pytest.mark.parametrize("helper, text, message", [
    (whole_number, "1.5", "'1.5' is not a whole number"), (whole_number, "three", "'three' is not a whole number"),
    (count, "-2", "'-2' is negative: give 0 or more"), (count, "x", "'x' is not a whole number"),
    (number, "small", "'small' is not a number"), (bound, "nan", "'nan' is not a number"),
    (port, "http", "'http' is not a port number"),
    (trial_numbers, "one,two", "'one,two' is not a comma-separated list of trial numbers, such as 3,7,12"),
    (trial_states, "complete,exploded", "unknown state 'exploded': use running, waiting, complete, pruned, fail"),
])
def test_a_typed_helper_refuses_bad_text_with_the_line_argparse_prints(helper, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        helper(text)
    assert str(err.value) == message


def test_a_study_setting_keeps_nan_for_its_own_check_to_name_the_flag():
    assert math.isnan(number("nan"))  # `--lr-max nan` is refused by the study's check, naming --lr-max


def test_a_bad_value_is_one_line_naming_the_flag_and_the_help_to_read(capsys):
    line = _error(["query", "top", "-k", "-2"], capsys)
    assert line == "hpsearch query top: error: argument -k: '-2' is negative: give 0 or more (see hpsearch query top --help)"


@pytest.mark.parametrize("argv, abbreviated", [
    (["run", "--epoch", "3"], "--epoch"), (["worker", "--max-fail", "2"], "--max-fail"), (["launch", "--per", "2"], "--per"),
    (["init", "--stud", "x"], "--stud"), (["query", "trials", "--lim", "3"], "--lim"), (["query", "follow", "--from"], "--from"),
    (["dashboard", "--po", "8081"], "--po"), (["db", "views", "--stor", "sqlite:///x.db"], "--stor"), (["db", "url", "--deb"], "--deb"),
])
def test_an_abbreviated_flag_is_unknown_rather_than_taken_for_the_long_one(argv, abbreviated, capsys):
    line = _error(argv, capsys)
    # the command's own error and help, which list the flags it does take
    command = "hpsearch " + " ".join(argv[: 2 if argv[0] in ("query", "db") else 1])
    assert line.startswith(f"{command}: error: unrecognized arguments: {abbreviated}") and line.endswith(f"(see {command} --help)"), line


@pytest.mark.parametrize("argv, storage", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_every_command_takes_the_shared_flags_and_says_how_to_use_it(argv, storage, capsys):
    flags = ["--debug", *(["--storage", "sqlite:///x.db"] if storage else [])]
    args = build_parser().parse_args([*argv, *flags])
    assert args.debug is True and getattr(args, "storage", None) == ("sqlite:///x.db" if storage else None)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hpsearch {' '.join(argv)} ") and "--debug" in out


def test_the_study_commands_share_their_flags_and_defaults():
    from search.fleet.limits import MAX_CONSECUTIVE_FAILURES, MAX_RESTARTS

    for command in ("run", "launch", "worker", "init"):
        args = build_parser().parse_args([command])
        # --trials is resolved when the command runs: DEFAULT_TRIALS, or no limit with --epoch-budget
        # (init records a budget only where one is given: hpsearch query follow shows it)
        # --study too: named once --model is parsed, DEFAULT_STUDY for the recipe (search.study.config.default_study)
        assert (args.study, args.trials, args.epoch_budget, args.format, args.data) == (None, None, None, "text", None)
        assert (args.epochs, args.batch_size, args.lr_min, args.pruner) == (None, None, None, None)  # not given: the study's
    for command in ("run", "launch", "worker"):
        assert build_parser().parse_args([command]).max_failures == MAX_CONSECUTIVE_FAILURES
    assert build_parser().parse_args(["launch"]).max_restarts == MAX_RESTARTS
    assert build_parser().parse_args(["run"]).workers == 1 and build_parser().parse_args(["launch"]).workers is None


def test_help_shows_the_defaults_search_config_declares(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per flag: no wrapping inside a default
    recipe = StudyConfig()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--help"])
    out = capsys.readouterr().out
    for text in (f"(default: {recipe.epochs}, the recipe's)", f"(default: {recipe.batch_size}, the recipe's)",
                 f"(default: {recipe.lr_min!r})", f"(default: {recipe.lr_max!r})", f"(default: {recipe.pruner})",
                 f"(default: {recipe.sampler})", f"(default: {recipe.validation})", f"the last {HOLDOUT_SIZE:,} training images",
                 f"(default: {DEFAULT_TRIALS}; no limit with --epoch-budget)", f"(default: {DEFAULT_STUDY} for the recipe;"):
        assert text in out, text


def test_query_actions_take_study_and_format_where_they_read_one_study():
    p = build_parser()
    assert p.parse_args(["query", "trials"]).study is None  # settled by pick_study once the studies are known
    assert p.parse_args(["query", "summary", "--format", "csv", "--study", "x"]).format == "csv"
    assert p.parse_args(["query", "follow"]).format == "json"
    assert p.parse_args(["landscape"]).study is None and p.parse_args(["dashboard"]).study is None


@pytest.mark.parametrize("given, names, study", [
    (None, [], DEFAULT_STUDY),  # its refusal says the storage holds no studies
    (None, ["getting_started.build_model"], "getting_started.build_model"),
    (None, ["a", "b"], DEFAULT_STUDY),  # ambiguous: the refusal lists both
    (None, ["a", DEFAULT_STUDY], DEFAULT_STUDY),
    ("x", ["getting_started.build_model"], "x"),
])
def test_a_reader_without_study_reads_the_recipes_or_the_only_study(given, names, study):
    from search.study.config import pick_study

    assert pick_study(given, names) == study


def test_query_studies_reads_no_single_study(capsys):
    assert "unrecognized arguments: --study" in _error(["query", "studies", "--study", "x"], capsys)


@pytest.mark.parametrize("argv", [["--frobnicate"], ["--frobnicate", "run"], ["--x=1", "query", "top"]])
def test_a_flag_before_any_command_is_the_top_level_parsers_unknown_flag(argv, capsys):
    # argparse said only "the following arguments are required: COMMAND", or blamed the command after it
    assert _error(argv, capsys) == f"hpsearch: error: unrecognized arguments: {argv[0]} (see hpsearch --help)"
