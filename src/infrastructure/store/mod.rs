//! Event and feature stores: `sqlite` (the embedded default) and
//! `clickhouse`, behind the same ports.

pub mod clickhouse;
pub mod clickhouse_sql;
pub mod sqlite;
pub mod user_scan;
