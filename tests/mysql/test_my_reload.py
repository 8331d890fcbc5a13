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


def test_mysql_limits_count_sessions_of_the_previous_configuration(start_gateway, my_via):
    """The limits are shared by every configuration generation (gate/front.c): after a reload that
    reorders the identities, an identity's max_connections and max_clients still count the MySQL
    sessions the previous configuration serves."""
    gw = start_gateway({"identities": {AGENT: {"max_connections": 1}}, "limits": {"max_clients": 2}},
                       name="my_reload_limits")
    first = my_via(gw)
    try:
        cfg = copy.deepcopy(gw.config)
        # The agent's identity moves to the end: its slot is found by name, not by position.
        cfg["identities"] = {k: v for k, v in cfg["identities"].items() if k != AGENT} | {
            AGENT: cfg["identities"][AGENT]}
        cfg["identities"][ADDED] = {"scram": scram_verifier(ADDED_PASSWORD),
                                    "mysql_native": native_verifier(ADDED_PASSWORD), "role": "tester"}
        sighup_and_wait(gw, cfg, 2)
        with pytest.raises(pymysql.err.OperationalError) as refused:
            my_via(gw)
        assert refused.value.args[0] == 1203, refused.value.args  # ER_TOO_MANY_USER_CONNECTIONS
        second = my_via(gw, user=ADDED, password=ADDED_PASSWORD)  # client 2 of 2 (one per generation)
        try:
            with pytest.raises(pymysql.err.OperationalError) as full:
                my_via(gw, user=ADDED, password=ADDED_PASSWORD)
            assert full.value.args[0] == 1040, full.value.args  # ER_CON_COUNT_ERROR: max_clients
        finally:
            second.close()
        with first.cursor() as cur:  # the old generation's session is still served
            cur.execute("select count(*) from wards")
            assert cur.fetchone() == (10,)
    finally:
        first.close()
    deadline = time.monotonic() + 10
    while True:  # its slot is free again once the old session is gone
        try:
            c = my_via(gw)
            c.close()
            break
        except pymysql.err.OperationalError as e:
            assert e.args[0] in (1203, 1040) and time.monotonic() < deadline, e.args
            time.sleep(0.1)
