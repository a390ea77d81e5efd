/// The peer directory in PostgreSQL (docs/cluster.md, "Schema"): its migrations and every
/// statement the cluster role sends. scripts/test-directory-sql.sh runs this very text (it
/// extracts the literals from this file) against a scratch server; keep each literal in the form
/// it parses: `static let NAME = "…"` on one line, migrations as `private static let vN = #"""`
/// blocks indented by four spaces, no `\#` in them.
///
/// Migrations run with the simple query protocol, all in one transaction, in this order:
///
///     BEGIN
///     lockSchema          -- pg_advisory_xact_lock(hashtext('peerjs_schema')): one migrator at a time
///     bootstrap           -- after the lock: two concurrent CREATE TABLE IF NOT EXISTS can fail
///     currentVersion      -- max(version), 0 when the table is empty
///     -- above `version`: refuse the database (ROLLBACK; it was migrated by a newer peerjs)
///     migrations[v]       -- for each v from the current version to `version` - 1 (v = 0 is version 1)
///     setVersion(version) -- replaces the one version row, in the same transaction
///     COMMIT
///
/// Every other statement takes $n bind parameters (extended protocol). Each parameter is cast in
/// the text, so the client may send them untyped (OID 0) in text format; bytea in text format is
/// `\x` followed by hex.
///
/// A row is live while `refreshed > now() - expiry`; `now()` is the start of the transaction, so
/// run each statement in its own (implicit) transaction, at READ COMMITTED (the default: the
/// claim's re-read after a conflict needs a new snapshot).
enum DirectorySchema {
    /// migrations[0] is version 1.
    static let migrations: [String] = [v1]
    /// The newest version this build knows; a database above it is refused.
    static let version: Int = migrations.count

    static let bootstrap = "CREATE TABLE IF NOT EXISTS peerjs_schema (version integer NOT NULL)"
    static let lockSchema = "SELECT pg_advisory_xact_lock(hashtext('peerjs_schema'))"
    static let currentVersion = "SELECT coalesce(max(version), 0) FROM peerjs_schema"
    static func setVersion(_ version: Int) -> String {
        "DELETE FROM peerjs_schema; INSERT INTO peerjs_schema (version) VALUES (\(version))"
    }

    /// ($1 key, $2 id, $3 instance, $4 token hash, $5 limit (0: none), $6 expiry in seconds) →
    /// one row, one text column: `granted`, `moved:INSTANCE`, `taken` or `limit` (peerjs_claim
    /// below). SQLSTATE 40001 when the row churned under it five times in a row: try again.
    static let claim = "SELECT peerjs_claim($1::text, $2::text, $3::text, $4::bytea, $5::integer, $6::integer)"
    /// ($1 key, $2 id, $3 instance): deletes the row only while this instance owns it.
    static let release = "DELETE FROM peerjs_peers WHERE key = $1::text AND id = $2::text AND instance = $3::text"
    /// ($1 instance): every expiry/3.
    static let refresh = "UPDATE peerjs_peers SET refreshed = now() WHERE instance = $1::text"
    /// ($1 expiry in seconds) → one row (peer rows deleted, relay rows deleted): peer rows expired
    /// for more than one expiry (refreshed before now() - 2 × expiry) and relay rows older than
    /// 60 s. One statement (two data-modifying CTEs), as the extended protocol wants.
    static let sweep = "WITH peers AS (DELETE FROM peerjs_peers WHERE refreshed < now() - make_interval(secs => 2 * $1::integer) RETURNING 1), relay AS (DELETE FROM peerjs_relay WHERE created < now() - interval '60 seconds' RETURNING 1) SELECT (SELECT count(*) FROM peers), (SELECT count(*) FROM relay)"
    /// ($1 instance): the clean stop.
    static let dropInstance = "DELETE FROM peerjs_peers WHERE instance = $1::text"
    /// ($1 this instance, $2 expiry in seconds) → rows (instance, key, id): the live rows of
    /// every other instance.
    static let loadDirectory = "SELECT instance, key, id FROM peerjs_peers WHERE refreshed > now() - make_interval(secs => $2::integer) AND instance <> $1::text"
    /// ($1 target instance, $2 body) → one row (seq).
    static let putRelay = "INSERT INTO peerjs_relay (target, body) VALUES ($1::text, $2::bytea) RETURNING seq"
    /// ($1 seq, $2 this instance) → the body once, no row after: delivered at most once. A body
    /// over 256 KiB (no peerjs writes one: a frame is at most 64 KiB) is left to the sweep.
    static let takeRelay = "DELETE FROM peerjs_relay WHERE seq = $1::bigint AND target = $2::text AND octet_length(body) <= 262144 RETURNING body"
    /// ($1 channel, $2 payload): the payload must be under 8000 bytes (7999 at most; the server's
    /// "payload string too long" otherwise), the channel under 64 bytes. Outside write
    /// transactions (docs/cluster.md). LISTEN takes the channel as an identifier: quote it
    /// (`LISTEN "peerjs.i.Name"`), or the dots fail to parse and capitals fold to lower case.
    static let notify = "SELECT pg_notify($1::text, $2::text)"

    /// Version 1: the tables of docs/cluster.md and peerjs_claim.
    ///
    /// peerjs_claim(key, id, instance, token hash, limit, expiry s) looks at the row (key, id)
    /// under FOR UPDATE; live means refreshed > now() - expiry:
    /// - live, same instance: `granted` (a re-claim; token and refreshed are set again);
    /// - live, another instance, same token hash: the row moves to this instance (refreshed set),
    ///   `moved:OLD`;
    /// - live, another instance, another token hash: `taken`, nothing changes;
    /// - absent or expired (an expired row is taken over as if absent): `limit` when limit > 0
    ///   and the live rows of all keys and instances number limit or more; otherwise the row is
    ///   inserted (or the expired one overwritten) and `granted`.
    /// Two sessions claiming one absent id: INSERT … ON CONFLICT DO NOTHING makes the second
    /// wait for the first one's transaction; when that commits, the second re-reads the row
    /// (FOR UPDATE) and answers from it (`taken`, or `moved:` with the same token); when it rolls
    /// back, the second inserts. At most five rounds, then SQLSTATE 40001.
    /// The limit is a count(*) over the live rows, a sequential scan (no index on refreshed, which
    /// would keep the refresh UPDATEs from being HOT): cheap at the sizes a limit is meant for,
    /// and honest but not serialised, so concurrent claims of new ids can pass it together, by at
    /// most one each.
    private static let v1 = #"""
    CREATE TABLE peerjs_peers (
      key text NOT NULL, id text NOT NULL, instance text NOT NULL,
      token_hash bytea NOT NULL, refreshed timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (key, id));
    CREATE INDEX peerjs_peers_instance ON peerjs_peers (instance);
    CREATE TABLE peerjs_relay (seq bigserial PRIMARY KEY, target text NOT NULL,
      body bytea NOT NULL, created timestamptz NOT NULL DEFAULT now());
    CREATE FUNCTION peerjs_claim(p_key text, p_id text, p_instance text, p_token bytea,
                                 p_limit integer, p_expiry_s integer) RETURNS text
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
      v_live_since timestamptz;
      v_found boolean;
      v_instance text;
      v_token bytea;
      v_refreshed timestamptz;
    BEGIN
      IF p_expiry_s IS NULL OR p_expiry_s < 1 THEN
        RAISE EXCEPTION 'peerjs_claim: expiry must be 1 s or more, not %', p_expiry_s;
      END IF;
      v_live_since := now() - make_interval(secs => p_expiry_s);
      FOR v_round IN 1..5 LOOP
        SELECT instance, token_hash, refreshed INTO v_instance, v_token, v_refreshed
          FROM peerjs_peers WHERE key = p_key AND id = p_id FOR UPDATE;
        v_found := FOUND;
        IF v_found AND v_refreshed > v_live_since THEN
          IF v_instance = p_instance AND v_token = p_token THEN
            UPDATE peerjs_peers SET refreshed = now() WHERE key = p_key AND id = p_id;
            RETURN 'granted';
          ELSIF v_instance = p_instance THEN
            -- Ours, under another token: a second client claiming an id a first one holds.
            RETURN 'taken';
          ELSIF v_token = p_token THEN
            UPDATE peerjs_peers SET instance = p_instance, refreshed = now()
              WHERE key = p_key AND id = p_id;
            RETURN 'moved:' || v_instance;
          END IF;
          RETURN 'taken';
        END IF;
        -- Absent or expired: a new id. count(*) is a scan of the table (see above).
        IF p_limit > 0
           AND (SELECT count(*) FROM peerjs_peers WHERE refreshed > v_live_since) >= p_limit THEN
          RETURN 'limit';
        END IF;
        IF v_found THEN
          -- Expired, and locked by the SELECT: take it over. A stalled owner that comes back
          -- must drop its peer: it is told, like for a move.
          UPDATE peerjs_peers SET instance = p_instance, token_hash = p_token, refreshed = now()
            WHERE key = p_key AND id = p_id;
          IF v_instance <> p_instance THEN
            RETURN 'moved:' || v_instance;
          END IF;
          RETURN 'granted';
        END IF;
        INSERT INTO peerjs_peers (key, id, instance, token_hash) VALUES (p_key, p_id, p_instance, p_token)
          ON CONFLICT (key, id) DO NOTHING;
        IF FOUND THEN
          RETURN 'granted';
        END IF;
        -- Another session inserted it and committed: read it again.
      END LOOP;
      RAISE EXCEPTION 'peerjs_claim: % % kept changing, try again', p_key, p_id
        USING ERRCODE = 'serialization_failure';
    END
    $$;
    """#
}

extension DirectorySchema {
    /// The statements of a migration script, one by one: postgres-nio sends every query through
    /// the extended protocol, which takes one statement at a time. Splits at `;` outside quotes
    /// (`'…'`, `"…"`) and dollar-quoted bodies (`$$…$$`, `$tag$…$tag$`) and `--` comments.
    static func statements(_ script: String) -> [String] {
        let text = Array(script.utf8)
        var statements: [String] = []
        var start = 0
        var index = 0
        func flush(_ end: Int) {
            let statement = String(decoding: text[start..<end], as: UTF8.self).trimmingSpaces
            if !statement.isEmpty { statements.append(statement) }
        }
        while index < text.count {
            let byte = text[index]
            if byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"") {
                index += 1
                while index < text.count, text[index] != byte { index += 1 }
                index += 1
            } else if byte == UInt8(ascii: "-"), index + 1 < text.count, text[index + 1] == UInt8(ascii: "-") {
                while index < text.count, text[index] != UInt8(ascii: "\n") { index += 1 }
            } else if byte == UInt8(ascii: "$"), let close = text[(index + 1)...].firstIndex(of: UInt8(ascii: "$")),
                text[(index + 1)..<close].allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) })
            {
                let tag = Array(text[index...close])
                index = close + 1
                while index < text.count, !text[index...].starts(with: tag) { index += 1 }
                index += tag.count
            } else if byte == UInt8(ascii: ";") {
                flush(index)
                index += 1
                start = index
            } else {
                index += 1
            }
        }
        flush(min(index, text.count))
        return statements
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
