"""ClientErrorLog: one log line per kind of client error per interval, with a count of the rest."""

from cortexd.gateway.client_errors import ClientErrorLog, shown


def test_first_of_a_kind_is_logged_then_one_per_interval_with_a_count():
    quiet = ClientErrorLog(interval=10.0)
    assert quiet.admit("BadStatusLine", now=100.0) == 0
    assert [quiet.admit("BadStatusLine", now=100.0 + i / 10) for i in range(1, 50)] == [None] * 49
    assert quiet.admit("LineTooLong", now=101.0) == 0  # another kind has its own interval
    assert quiet.admit("BadStatusLine", now=110.0) == 49  # says how many were left out
    assert quiet.admit("BadStatusLine", now=111.0) is None
    assert quiet.admit("BadStatusLine", now=125.0) == 1
    assert quiet.total == 54


def test_line_says_how_many_were_left_out():
    assert ClientErrorLog.line("BadStatusLine", "from 1.2.3.4: junk", 0) == \
        "client error: BadStatusLine: from 1.2.3.4: junk"
    assert ClientErrorLog.line("BadStatusLine", "from 1.2.3.4: junk", 1999).endswith(
        "(and 1999 more like it since the last such line)")


def test_shown_cuts_and_escapes_client_text():
    assert shown("abc") == "abc"
    assert shown("x" * 500) == "x" * 200 + "..."
    assert shown("a\nb\x00c\udcff\u00e9") == "a\\nb\\x00c\\udcff\\xe9"
    assert shown("\x00" * 10_000) == "\\x00" * 50 + "..."
