"""Fixtures of the image suite (tests/images): a fresh database on the test
PostgreSQL for each test that starts a program against one."""

import os
import urllib.parse
import uuid

import pytest

import image_support as support


@pytest.fixture
def database():
    """A fresh database on the test server: (url, server major); dropped afterwards."""
    server_url = os.environ.get(
        "TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )
    name = f"image_test_{uuid.uuid4().hex[:12]}"
    support.psql(server_url, f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(server_url)
    url = urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    major = int(support.psql(url, "SHOW server_version_num")) // 10000
    try:
        yield url, major
    finally:
        support.psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
