"""Configuration reload (SIGHUP) with the MySQL front: new MySQL sessions get the new identities and
secrets, an open MySQL session keeps working, the listener stays the same socket."""

import copy
import os
import signal
import time

import pymysql
import pytest

from harness import to_yaml
from myharness import AGENT, AGENT_PASSWORD, native_verifier, scram_verifier

ROTATED = "rotated-" + os.urandom(8).hex()
ADDED = "my_added_agent"
ADDED_PASSWORD = "added-" + os.urandom(8).hex()


def sighup_and_wait(gw, config, generation):
    gw.config_path.write_text(to_yaml(config) + "\n")
    os.kill(gw.pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while f"configuration reloaded: generation {generation}" not in gw.log():
        assert "reload refused" not in gw.log(), gw.log()
        assert time.monotonic() < deadline, gw.log()
        time.sleep(0.05)


def test_mysql_sessions_after_a_reload_get_the_new_identities(start_gateway, my_via):
    gw = start_gateway()
    open_session = my_via(gw)
    try:
        cfg = copy.deepcopy(gw.config)
        cfg["identities"][AGENT].update(scram=scram_verifier(ROTATED), mysql_native=native_verifier(ROTATED))
        cfg["identities"][ADDED] = {"scram": scram_verifier(ADDED_PASSWORD),
                                    "mysql_native": native_verifier(ADDED_PASSWORD), "role": "tester"}
        sighup_and_wait(gw, cfg, 2)
        with pytest.raises(pymysql.err.OperationalError) as refused:
            my_via(gw, password=AGENT_PASSWORD)
        assert refused.value.args[0] == 1045
        for user, password in ((AGENT, ROTATED), (ADDED, ADDED_PASSWORD)):
            c = my_via(gw, user=user, password=password)
            with c.cursor() as cur:
                cur.execute("select count(*) from wards")
                assert cur.fetchone() == (10,)
            c.close()
        with open_session.cursor() as cur:  # logged in before the reload: still served
            cur.execute("select count(*) from wards")
            assert cur.fetchone() == (10,)
    finally:
        open_session.close()
