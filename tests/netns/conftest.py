"""The namespace site is built once per module and its firewalls reset around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from .lab import Lab, require_netns
from .topology import sweep_leftovers


@pytest.fixture(scope="module")
def lab_site(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    sweep_leftovers()
    lab = Lab(tmp_path_factory.mktemp("netns-site"), tls_ca)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()  # every process by pid, then every namespace (their links go with them)


@pytest.fixture
def lab(lab_site: Lab) -> Iterator[Lab]:
    """The site with only its standing firewall rules, restored after the test too."""
    lab_site.reset_firewalls()
    try:
        yield lab_site
    finally:
        lab_site.reset_firewalls()
