// Connects with process.env.DATABASE_URL as it is, as an app on node-postgres 8 does
// (new pg.Client({ connectionString })), and prints one JSON line: the user and whether
// the connection is TLS, or the error. Exit 0 on success, 1 on failure.
// Used by tests/test_drivers.py; the URL comes from the environment, never argv.
"use strict";
const { Client } = require("pg");

async function main() {
  const client = new Client({
    connectionString: process.env.DATABASE_URL,
    connectionTimeoutMillis: 10000,
  });
  try {
    await client.connect();
    const res = await client.query("SELECT current_user AS user_name");
    const tls = typeof client.connection.stream.getPeerCertificate === "function";
    console.log(JSON.stringify({ ok: true, user: res.rows[0].user_name, tls }));
    await client.end();
    return 0;
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err && err.message ? err.message : err), code: err.code || null }));
    try { await client.end(); } catch (e) { /* already closed */ }
    return 1;
  }
}

main().then((code) => { process.exitCode = code; });
