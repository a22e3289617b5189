//! Feeding the fleet's own engines: a plant aggregates tens to thousands of gateways
//! in a Prometheus-compatible cluster, so each gateway exposes its targets and
//! itself in the Prometheus text format (`prometheus`) instead of monserv growing
//! an aggregation server of its own, and pushes the same series with Prometheus
//! remote_write (`remote_write`, `wire`), queueing on flash while the uplink is down,
//! and is a Sparkplug B edge node on the plant's MQTT brokers (`edge`, `sparkplug`,
//! `mqtt`), each monitored host a device.

pub mod edge;
pub mod mqtt;
pub mod prometheus;
pub mod remote_write;
pub mod sparkplug;
pub mod wire;
