//! The HTTP API over real sockets, one file per endpoint group: every
//! route, every documented error status, admin auth, hot swap under load
//! and graceful shutdown.

mod admin;
mod events;
mod health;
mod helpers;
mod live;
mod monitoring;
mod predict;
