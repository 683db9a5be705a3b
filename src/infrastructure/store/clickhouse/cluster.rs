//! Cluster mode (`clickhouse.cluster`): the same numbered migrations,
//! rewritten so each table is a `Replicated*MergeTree` named `<table>_local`
//! on every shard (ON CLUSTER) with a `Distributed` table of the original
//! name in front. Every query of the store keeps reading and writing the
//! original names; the per-user aggregations run on each shard's local
//! tables (see `ClickHouseStore::on_shards`).
//!
//! Sharding keys put everything of a user on one shard — events, feature
//! rows, predictions and the user's name — so per-user aggregation needs
//! no shuffle, and a redelivered event lands on the shard that holds its
//! first copy (the `ReplacingMergeTree` key and the redelivery checks stay
//! per shard).

use crate::application::ports::StoreError;

/// How rows of each table are spread over shards. A table missing here is
/// an error when migrating a cluster: a new migration must choose.
fn sharding_key(table: &str) -> Option<&'static str> {
    Some(match table {
        "events" | "user_features" | "feature_vectors" | "predictions" => "intHash64(user_id)",
        "user_names" => "intHash64(user_key)",
        // One header per snapshot; `FINAL` needs a snapshot's versions on
        // one shard.
        "feature_snapshots" => "toUInt32(as_of)",
        // A partition's ranges together: overlap checks read one shard.
        "log_ranges" => "cityHash64(topic, partition)",
        "reject_counts" => "rand()",
        _ => return None,
    })
}

/// The ZooKeeper path of a shard's replicas of `table`.
fn zk_path(db: &str, table: &str) -> String {
    format!("'/clickhouse/tables/{{shard}}/{db}/{table}'")
}

/// The Distributed front of `table` on every server.
fn distributed(db: &str, table: &str, cluster: &str, key: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{table}_local \
         ENGINE = Distributed({cluster}, {db}, {table}_local, {key})"
    )
}

/// One migration's DDL (already renamed to `db`) as the statements that
/// apply it to `cluster`.
///
/// # Errors
/// [`StoreError::Corrupt`] for DDL this rewrite does not understand (a
/// statement that is neither `CREATE TABLE IF NOT EXISTS` nor
/// `ALTER TABLE`, or a table without a sharding key).
pub fn cluster_ddl(ddl: &str, db: &str, cluster: &str) -> Result<Vec<String>, StoreError> {
    let body: String = ddl
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let body = body.trim();
    let bad = |why: &str| StoreError::Corrupt(format!("cluster migration: {why}: {body}"));
    let prefix = format!("{db}.");
    if let Some(rest) = body.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '(')
            .ok_or_else(|| bad("no table name"))?;
        let table = rest[..name_end]
            .strip_prefix(&prefix)
            .ok_or_else(|| bad("table outside the database"))?;
        let key = sharding_key(table).ok_or_else(|| bad("no sharding key for this table"))?;
        let after_name = &rest[name_end..];
        let engine_at = after_name
            .find("ENGINE = ")
            .ok_or_else(|| bad("no ENGINE"))?;
        let (columns, engine_part) = after_name.split_at(engine_at);
        let engine_part = &engine_part["ENGINE = ".len()..];
        let engine_end = engine_part
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(engine_part.len());
        let engine = &engine_part[..engine_end];
        if !engine.ends_with("MergeTree") {
            return Err(bad("only *MergeTree engines are replicated"));
        }
        let mut tail = &engine_part[engine_end..];
        let mut args = String::new();
        if let Some(inner) = tail.strip_prefix('(') {
            let close = inner
                .find(')')
                .ok_or_else(|| bad("unclosed engine arguments"))?;
            args = inner[..close].trim().to_string();
            tail = &inner[close + 1..];
        }
        let replicated_args = if args.is_empty() {
            format!("{}, '{{replica}}'", zk_path(db, table))
        } else {
            format!("{}, '{{replica}}', {args}", zk_path(db, table))
        };
        let local = format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table}_local ON CLUSTER {cluster}{columns}ENGINE = Replicated{engine}({replicated_args}){tail}"
        );
        return Ok(vec![local, distributed(db, table, cluster, key)]);
    }
    if let Some(rest) = body.strip_prefix("ALTER TABLE ") {
        let name_end = rest
            .find(char::is_whitespace)
            .ok_or_else(|| bad("no table name"))?;
        let table = rest[..name_end]
            .strip_prefix(&prefix)
            .ok_or_else(|| bad("table outside the database"))?;
        let key = sharding_key(table).ok_or_else(|| bad("no sharding key for this table"))?;
        let change = &rest[name_end..];
        // The storage first; then the Distributed front is made anew from
        // it (it holds no rows: inserts are synchronous), because 18.16
        // refuses ALTER ON CLUSTER of a non-replicated table when shards
        // replicate internally.
        return Ok(vec![
            format!("ALTER TABLE {db}.{table}_local ON CLUSTER {cluster}{change}"),
            format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"),
            distributed(db, table, cluster, key),
        ]);
    }
    Err(bad("unsupported statement"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infrastructure::store::clickhouse::{MIGRATIONS, migration_ddl};

    #[test]
    fn every_migration_has_a_cluster_form() {
        for (_, name, sql) in MIGRATIONS {
            let statements = cluster_ddl(&migration_ddl(sql, "db1"), "db1", "c1")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = if sql.contains("ALTER TABLE") { 3 } else { 2 };
            assert_eq!(statements.len(), expected, "{name}");
            for s in &statements {
                assert!(s.contains("ON CLUSTER c1"), "{name}: {s}");
                assert!(!s.contains("churn."), "{name}: {s}");
            }
        }
    }

    #[test]
    fn tables_become_replicated_locals_behind_distributed_fronts() {
        let ddl = migration_ddl(MIGRATIONS[0].2, "db1");
        let s = cluster_ddl(&ddl, "db1", "c1").unwrap();
        assert!(
            s[0].starts_with("CREATE TABLE IF NOT EXISTS db1.events_local ON CLUSTER c1"),
            "{}",
            s[0]
        );
        assert!(
            s[0].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db1/events', '{replica}')"),
            "{}",
            s[0]
        );
        assert!(
            s[0].contains("ORDER BY (user_id, event_time, event_id)"),
            "{}",
            s[0]
        );
        assert!(
            s[1].ends_with("ENGINE = Distributed(c1, db1, events_local, intHash64(user_id))"),
            "{}",
            s[1]
        );
        // Engine arguments follow the replication ones.
        let snapshots = cluster_ddl(&migration_ddl(MIGRATIONS[1].2, "db1"), "db1", "c1").unwrap();
        assert!(
            snapshots[0].contains("'{replica}', created_at)"),
            "{}",
            snapshots[0]
        );
    }

    #[test]
    fn unknown_tables_and_statements_are_refused() {
        let e = cluster_ddl(
            "CREATE TABLE IF NOT EXISTS db1.mystery (x UInt8) ENGINE = MergeTree ORDER BY x",
            "db1",
            "c1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("sharding key"), "{e}");
        assert!(cluster_ddl("DROP TABLE db1.events", "db1", "c1").is_err());
    }
}
