//! The Lattice server: roles as services on the shard runtime, and the `lattice` binary's pieces.
//!
//! - [`service`]: the component API game code is written against (`Component`, `Ctx`,
//!   `component!`, `service!`);
//! - [`gate`]: every client frame's checks (handshake, opcode, flags, body) before any service;
//! - [`resume`]: a socket whose first frame is `Resume` taking over its session;
//! - [`host`]: the services of one shard, routing, bounded queues, calls into components;
//! - [`app`]: the gate and the host composed as the runtime's `ShardApp`;
//! - [`logic`]: the logic service: accounts and player profiles, icons, and the demo components
//!   (echo, chat);
//! - [`center`]: the center role: the machine-id lease and the per-shard unique id generators;
//! - [`cluster`]: several nodes: the live-node view (discovery writes it, routing reads it);
//! - [`admin`]: the admin listener's routes;
//! - [`http`]: the routes of the shards' HTTP listeners (health, demo page, RPC);
//! - [`config`], [`metrics`], [`server`] (`lattice run`), [`cli`], [`tools`] (`lattice admin`,
//!   `lattice tool …`).
//!
//! Nothing here touches a socket (the runtime does) or writes SQL (the storage crate does).
#![warn(missing_docs)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod center;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crash;
pub mod datadir;
pub mod gate;
pub mod host;
pub mod http;
pub mod logic;
pub mod lua;
pub mod metrics;
pub mod resume;
pub mod server;
pub mod service;
pub mod strict_json;
pub mod text;
pub mod tools;
