import pytest

from ui import auth
from ui.auth import AdminDenied, require_admin


@pytest.fixture(autouse=True)
def _fresh_throttle():
    auth.reset_throttle()
    yield
    auth.reset_throttle()


def test_refused_with_the_variable_name_when_no_password_is_configured(settings):
    with pytest.raises(AdminDenied, match="HYBRID_RAG_ADMIN_PASSWORD"):
        require_admin("admin", "anything", settings, environ={})


def test_password_from_the_environment_variable_named_in_the_config(settings):
    settings.admin.password_env = "MY_ADMIN_PW"
    env = {"MY_ADMIN_PW": "s3cret"}
    assert require_admin("admin", "s3cret", settings, environ=env) == "admin"
    with pytest.raises(AdminDenied, match="Wrong"):
        require_admin("admin", "nope", settings, environ=env)
    with pytest.raises(AdminDenied, match="Wrong"):
        require_admin("root", "s3cret", settings, environ=env)
    with pytest.raises(AdminDenied, match="sign in"):
        require_admin("admin", "", settings, environ=env)


def test_password_from_the_config(settings):
    settings.admin.password = "cfg-pw"
    assert require_admin("admin", "cfg-pw", settings, environ={}) == "admin"


def test_guessing_is_throttled(settings):
    env = {"HYBRID_RAG_ADMIN_PASSWORD": "right"}
    for _ in range(auth.MAX_FAILURES):
        with pytest.raises(AdminDenied, match="Wrong"):
            require_admin("admin", "guess", settings, environ=env)
    with pytest.raises(AdminDenied, match="Too many"):
        require_admin("admin", "right", settings, environ=env)


def test_odd_input_never_crashes(settings):
    env = {"HYBRID_RAG_ADMIN_PASSWORD": "pw"}
    for user, pw in [(None, None), ("\udcff", "\x00"), ("admin" * 1000, "é" * 5000)]:
        with pytest.raises(AdminDenied):
            require_admin(user, pw, settings, environ=env)
        auth.reset_throttle()


def test_the_guessing_brake_is_per_client(settings):
    env = {"HYBRID_RAG_ADMIN_PASSWORD": "right"}
    for _ in range(auth.MAX_FAILURES):
        with pytest.raises(AdminDenied, match="Wrong"):
            require_admin("admin", "guess", settings, environ=env, client="10.0.0.66")
    with pytest.raises(AdminDenied, match="Too many"):
        require_admin("admin", "right", settings, environ=env, client="10.0.0.66")
    # the real admin, elsewhere, is not locked out by someone else's guessing
    assert require_admin("admin", "right", settings, environ=env, client="10.0.0.7") == "admin"


def test_client_of_a_gradio_request():
    class Req:
        class client:
            host = "192.0.2.4"

    assert auth.client_of(Req()) == "192.0.2.4"
    assert auth.client_of(None) == "-"
