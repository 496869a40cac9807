//! tfaudit's integration tests: the real binary, over real HTTP on 127.0.0.1, against
//! the simulator (and, for client behaviour per status code, wiremock).

mod harness;
mod receivers;
// The Elasticsearch stand-in and the private nats-server the forward crate's unit
// tests use, shared rather than written twice.
#[path = "../../../forward/src/es_receiver.rs"]
mod es_receiver;
#[path = "../../../forward/src/nats_server.rs"]
mod nats_server;

mod alerts;
mod auth;
mod client;
mod cluster;
mod cold;
mod config;
mod crash;
mod dashboard;
mod demo;
mod faults;
mod forward;
mod integrity;
mod investigate;
mod migrate;
mod names;
mod outage;
mod output;
mod report;
mod scheduled;
mod serve;
mod sync;
