import pytest

from labeling.models import Role
from tests.factories import UserFactory


@pytest.fixture
def labeler(db):
    return UserFactory(username="alice", role=Role.LABELER)


@pytest.fixture
def other_labeler(db):
    return UserFactory(username="bob", role=Role.LABELER)


@pytest.fixture
def researcher(db):
    return UserFactory(username="rita", role=Role.RESEARCHER)


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ada", role=Role.ADMIN)


@pytest.fixture
def no_role_user(db):
    return UserFactory(username="nobody")


@pytest.fixture
def users(labeler, researcher, admin_user, no_role_user):
    return {"labeler": labeler, "researcher": researcher, "admin": admin_user, "none": no_role_user}


@pytest.fixture
def as_researcher(client, researcher):
    client.force_login(researcher)
    return client


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
