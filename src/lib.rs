//! Tripwire: real-time behavioural triggers for e-commerce on timely and
//! differential dataflow. This crate is the job's edge: command line,
//! configuration, codec, transports (recordings and Kafka), the worker
//! runtime and telemetry. The dataflow logic lives in the `dataflows` crate.

pub mod codec;
pub mod config;
pub mod generate;
pub mod kafka;
pub mod live;
pub mod record;
pub mod replay;
pub mod runtime;
pub mod telemetry;
