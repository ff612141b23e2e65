"""Running the command line in the test's own process."""

from cvae_seg import cli


def error_lines(err: str) -> list[str]:
    """stderr's lines but the command's one-line warnings (``cvae-seg CMD: warning: ...``),
    which may come before an error (a setting the data set ignores, say)."""
    return [line for line in err.strip().splitlines() if ": warning: " not in line]


def refused_in_process(argv: list, capsys) -> str:
    """Run ``cvae-seg argv``; it must exit with status 2 and one error line on stderr (a
    user's mistake, said in one line), which is returned."""
    try:
        status = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_info:  # argparse's usage errors
        status = exit_info.code
    lines = error_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1, lines
    return lines[0]
