//! Event and feature stores behind the same ports, each backend in a
//! folder of the same shape (events, features, snapshots/training sets):
//! `sqlite` (the embedded default) and `clickhouse`, and the deadlines
//! every call of either runs under (`deadline`).

pub mod clickhouse;
pub mod deadline;
pub mod sqlite;
