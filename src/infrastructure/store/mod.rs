//! Event and feature stores. `sqlite` is the embedded default.

pub mod sqlite;
