#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Integration tests: the real daemon against real peers on loopback.
//! Needs root (the suite creates its SSH users and namespaces); run via `tests/run.sh`.

mod support;

mod agents;
mod appliance;
mod binary;
mod clients;
mod collect_hosts;
mod compile;
mod console;
mod durable;
mod expression;
mod failures;
mod fleet;
mod notify;
mod perimeter;
mod remember;
mod rest;
mod rules;
mod silence;
mod sink_peers;
mod sinks;
mod sparkplug;
mod websocket;
mod wss;
