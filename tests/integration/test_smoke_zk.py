from django_zkflags import flag_is_active_for_user
from django_zkflags.cache import store


def test_write_reaches_cache(zkflags):
    zkflags.write("alpha", everyone=True)
    assert flag_is_active_for_user(None, "alpha") is True
    zkflags.write("alpha", everyone=False)
    assert flag_is_active_for_user(None, "alpha") is False
    assert store.base.source == "zookeeper"
