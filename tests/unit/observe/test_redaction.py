"""The log redactor: a runner that echoes the token, whole, clipped, URL- or JSON-escaped, or
inside an object rendered with repr(), never gets it into a log line."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from queue_pump.observe.logs import MASK, Redactor
from tests.support.env import TOKEN
from tests.support.proc import pump_env, run
from tests.support.runner_double import Reply, runner_double


def test_an_echo_cut_at_the_message_limit_leaves_no_part_of_the_token() -> None:
    # The runner's message is cut at 300 characters; here the cut falls inside the token.
    body = {"error": "x" * 290 + TOKEN + " more"}
    with runner_double(lambda i: Reply(500, body)) as double:
        done = run(pump_env(double.url), "--once")
    assert done.code == 1
    detail = done.named("call_failed")[0]["detail"]
    assert detail.startswith("x" * 290) and detail.endswith(MASK)
    assert TOKEN[:8] not in done.stdout and TOKEN[:8] not in done.stderr


SECRET_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                    blacklist_characters="*"), min_size=8, max_size=40)
FORMS = {"plain": lambda s: s, "quote": lambda s: quote(s, safe=""), "quote_plus": quote_plus,
         "json": lambda s: json.dumps(s)[1:-1]}


@settings(max_examples=100, deadline=None)
@given(SECRET_TEXT, st.text(max_size=50), st.text(max_size=50), st.sampled_from(list(FORMS)))
def test_the_redactor_masks_a_secret_in_any_form_anywhere(
        secret: str, before: str, after: str, form: str) -> None:
    text = before + FORMS[form](secret) + after
    event = Redactor([secret])(None, "warning", {"event": "call_failed", "detail": text,
                                                 "nested": {"list": [text, (text,)]}})
    out = json.dumps(event)
    assert secret not in json.loads(out)["detail"]
    for shown in FORMS.values():
        assert shown(secret) not in out


@settings(max_examples=100, deadline=None)
@given(SECRET_TEXT, st.text(max_size=50), st.data())
def test_the_redactor_masks_a_secret_cut_off_at_the_end(secret: str, before: str,
                                                        data: st.DataObject) -> None:
    # Messages are clipped (300 characters): the clip may fall inside an echoed secret.
    keep = data.draw(st.integers(min(6, len(secret)), len(secret)))
    event = Redactor([secret])(None, "warning", {"event": "x", "detail": before + secret[:keep]})
    # Masked, though not always at the very end: with secret "00000000" after "000" the whole
    # secret is found first and masked ("***0"), and the "0" left is no part of it worth hiding.
    assert MASK in event["detail"]
    assert secret[:keep] not in event["detail"][len(before):]


def test_the_redactor_masks_objects_rendered_by_repr() -> None:
    class Leaky:
        def __repr__(self) -> str:
            return f"Leaky(token={TOKEN!r})"

    event = Redactor([TOKEN])(None, "info", {"event": "x", "obj": Leaky(),
                                            "err": RuntimeError(TOKEN)})
    assert TOKEN not in json.dumps(event, default=repr)


def test_a_non_finite_number_in_any_event_still_renders_valid_json() -> None:
    import io

    import structlog

    from queue_pump.observe.logs import configure, get_logger

    out = io.StringIO()
    configure(fmt="json", level="info", redactor=Redactor([TOKEN]), stream=out)
    try:
        get_logger().info("e", a=float("inf"), b={"c": [float("nan"), 1.5]}, d=-float("inf"))
    finally:
        structlog.reset_defaults()

    def refuse(name: str) -> None:
        raise ValueError(name)

    line = json.loads(out.getvalue(), parse_constant=refuse)
    assert (line["a"], line["b"], line["d"]) == ("inf", {"c": ["nan", 1.5]}, "-inf")
