"""The clinic catalog exists twice, once per engine's notion of schema:
masking-rules/clinic.yaml (PostgreSQL, schema public) and clinic_mysql.yaml
(MariaDB, schema clinic).  They must classify exactly the same columns the same
way, and both must cover every PHI column of the fixture's catalog."""
import csv
from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parents[2] / "masking-rules"
FIXTURE_PHI = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clinic.phi.tsv"


def columns(name):
    doc = yaml.safe_load((RULES / name).read_text())
    return doc["schema"], {(c["table"], c["column"]): (c["class"], c.get("mask"), c.get("join_key", False))
                           for c in doc["columns"]}


def test_postgres_and_mysql_catalogs_agree():
    pg_schema, pg = columns("clinic.yaml")
    my_schema, my = columns("clinic_mysql.yaml")
    assert (pg_schema, my_schema) == ("public", "clinic")
    assert pg == my


def test_catalogs_cover_every_phi_column_of_the_fixture():
    _, pg = columns("clinic.yaml")
    with FIXTURE_PHI.open() as f:
        listed = {(r["table"], r["column"]) for r in csv.DictReader(f, delimiter="\t")}
    assert listed - set(pg) == set()
