#!/usr/bin/python3
"""Patroni's post_bootstrap hook for the local cluster: creates the login role
`firebreak` and the database `firebreak` it owns, once, on the freshly
initialised primary. The password reaches the server only as a SCRAM-SHA-256
verifier computed here by libpq (PQencryptPasswordConn), so no cleartext
password is sent, stored or logged.
usage (by Patroni): post_bootstrap.py PASSWORD_FILE CONNSTRING
SPDX-License-Identifier: MIT
"""
import sys

import psycopg2
import psycopg2.extensions
from psycopg2 import sql


def main():
    if len(sys.argv) != 3:
        print("usage: post_bootstrap.py PASSWORD_FILE CONNSTRING", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        password = f.read().strip()
    if not password:
        print("post_bootstrap: %s is empty" % sys.argv[1], file=sys.stderr)
        return 1
    conn = psycopg2.connect(sys.argv[2])
    conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction block
    verifier = psycopg2.extensions.encrypt_password(password, "firebreak", conn, "scram-sha-256")
    with conn.cursor() as cur:
        # Patroni runs us with synchronous_commit=local: no standby exists yet to confirm.
        cur.execute(sql.SQL("CREATE ROLE firebreak LOGIN PASSWORD {}").format(sql.Literal(verifier)))
        cur.execute("CREATE DATABASE firebreak OWNER firebreak")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
