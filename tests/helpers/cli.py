"""Running the command line in the test's own process."""

from cvae_seg import cli


def refused_in_process(argv: list, capsys) -> str:
    """Run ``cvae-seg argv``; it must exit with status 2 and one line on stderr (a user's
    mistake, said in one line), which is returned."""
    try:
        status = cli.main([str(arg) for arg in argv])
    except SystemExit as exit_info:  # argparse's usage errors
        status = exit_info.code
    message = capsys.readouterr().err.strip()
    assert status == 2 and len(message.splitlines()) == 1, message
    return message
