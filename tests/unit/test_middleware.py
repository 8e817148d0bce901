"""FlagMiddleware (django_zkflags/middleware.py): checks without it, and the signed cookie
that gives anonymous visitors a stable bucket.

No ZooKeeper: flags are forced with ``override_flag``, or rules are published into the
store in a snapshot built in the test (``publish``). One snapshot per request while a new
one arrives from ZooKeeper: tests/integration/test_middleware.py.
"""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import override_settings

from django_zkflags import flag_is_active
from django_zkflags.evaluation import ANONYMOUS_SALT
from django_zkflags.rules import FlagRule, bucket
from django_zkflags.testing import override_flag

COOKIE = "zkflags_uid"


def cookie_id(value: str) -> str:
    """The anonymous id inside a signed cookie value (raises if the signature is bad)."""
    request = HttpRequest()
    request.COOKIES[COOKIE] = value
    return request.get_signed_cookie(COOKIE, salt=ANONYMOUS_SALT)


def signed(anonymous_id: str) -> str:
    """A cookie value signed the way the middleware signs it (as Django would)."""
    response = HttpResponse()
    response.set_signed_cookie(COOKIE, anonymous_id, salt=ANONYMOUS_SALT)
    return response.cookies[COOKIE].value


def test_without_the_middleware_flag_is_active_works(client, no_middleware, rf):
    with override_flag("guarded"):
        assert client.get("/guarded/").status_code == 200
    with override_flag("guarded", active=False):
        assert client.get("/guarded/").status_code == 404
    with override_flag("banner"):
        response = client.get("/home/")
        assert response.content.strip() == b"BANNER-ON"
        assert COOKIE not in response.cookies
        request = rf.get("/")
        assert not hasattr(request, "flags")
        assert flag_is_active(request, "banner") is True


# -- the anonymous cookie --------------------------------------------------------------------


def test_anonymous_cookie_set_signed_and_stable(publish, client):
    publish(FlagRule("banner", percent=50))
    response = client.get("/home/")
    morsel = response.cookies[COOKIE]
    anonymous_id = cookie_id(morsel.value)  # raises if it is not signed by us
    assert len(anonymous_id) >= 16
    assert morsel["httponly"] and morsel["samesite"] == "Lax"
    assert int(morsel["max-age"]) == 60 * 60 * 24 * 365
    expected = b"BANNER-ON" if bucket("banner", anonymous_id) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected
    for _ in range(5):
        again = client.get("/home/")
        assert COOKIE not in again.cookies  # not set again: the id is read back
        assert again.content.strip() == expected
    assert cookie_id(client.cookies[COOKIE].value) == anonymous_id


def test_anonymous_id_decides_the_answer(publish, client):
    publish(FlagRule("banner", percent=50))
    inside = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") < 5000)
    outside = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") >= 5000)
    client.cookies[COOKIE] = signed(inside)
    response = client.get("/home/")
    assert response.content.strip() == b"BANNER-ON"
    assert COOKIE not in response.cookies
    client.cookies[COOKIE] = signed(outside)
    assert client.get("/home/").content.strip() == b"BANNER-OFF"


def _signed_with(value: str, *, salt: str = ANONYMOUS_SALT, secret: str | None = None) -> str:
    response = HttpResponse()
    if secret is None:
        response.set_signed_cookie(COOKIE, value, salt=salt)
    else:
        with override_settings(SECRET_KEY=secret):
            response.set_signed_cookie(COOKIE, value, salt=salt)
    return response.cookies[COOKIE].value


@pytest.mark.parametrize("how", ["unsigned", "forged-signature", "other-salt", "other-key"])
def test_tampered_cookie_is_ignored(publish, client, how):
    publish(FlagRule("banner", percent=50))
    chosen = next(f"id-{i}" for i in range(1000) if bucket("banner", f"id-{i}") < 5000)
    value = {
        "unsigned": chosen,
        "forged-signature": chosen + ":" + "A" * 27,
        "other-salt": _signed_with(chosen, salt="another-salt"),
        "other-key": _signed_with(chosen, secret="not-the-secret"),
    }[how]
    client.cookies[COOKIE] = value
    response = client.get("/home/")
    # The visitor is treated as new: a fresh id, and the answer is that id's answer.
    new_id = cookie_id(response.cookies[COOKIE].value)
    assert new_id != chosen
    expected = b"BANNER-ON" if bucket("banner", new_id) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected


def test_no_cookie_without_a_percentage_flag(publish, client):
    publish(FlagRule("banner", everyone=True))
    assert COOKIE not in client.get("/home/").cookies
    publish(FlagRule("banner", everyone=None, staff=True))
    assert COOKIE not in client.get("/home/").cookies
    # A percentage flag that is forced on or off needs no identity either.
    publish(FlagRule("banner", everyone=False, staff=False, percent=50))
    assert COOKIE not in client.get("/home/").cookies


def test_no_cookie_when_the_percentage_flag_is_not_evaluated(publish, client):
    publish(FlagRule("banner", percent=50), FlagRule("guarded", everyone=True))
    response = client.get("/guarded/")
    assert response.status_code == 200
    assert COOKIE not in response.cookies


def test_unknown_flag_sets_no_cookie(publish, client):
    publish()  # no flags at all
    assert COOKIE not in client.get("/home/").cookies


def test_no_cookie_for_logged_in_users(publish, client, django_user_model):
    publish(FlagRule("banner", percent=50))
    user = django_user_model.objects.create_user("u", password="pw")
    client.force_login(user)
    response = client.get("/home/")
    assert COOKIE not in response.cookies
    expected = b"BANNER-ON" if bucket("banner", user.pk) < 5000 else b"BANNER-OFF"
    assert response.content.strip() == expected


# -- letting go of the snapshot --------------------------------------------------------------


def test_a_closed_response_lets_go_of_its_snapshot(publish, client):
    """Once the response is closed the request's flags hold no snapshot: a request left
    as cyclic garbage (``request.flags.request`` is the request) cannot keep a flags dict
    alive, which would make the watcher copy the whole dict (django_zkflags/view.py)."""
    import gc
    import sys

    from django_zkflags.cache import store

    publish(FlagRule("banner", everyone=True))
    flags_dict = store.current.flags
    gc.disable()
    try:
        before = sys.getrefcount(flags_dict)
        response = client.get("/home/")
        assert response.content.strip() == b"BANNER-ON"
        request_flags = response.wsgi_request.flags
        assert sys.getrefcount(flags_dict) == before  # the test client closed it
        # A check after the close follows the current snapshot.
        publish(FlagRule("banner", everyone=False))
        assert request_flags.is_active("banner") is True  # memoised: the request's answer
        assert request_flags.is_active("other") is False
        assert request_flags.snapshot.flags is store.current.flags
    finally:
        gc.enable()
