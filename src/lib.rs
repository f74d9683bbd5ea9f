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
pub mod recording;
pub mod replay;
pub mod runtime;
pub mod telemetry;

/// mimalloc instead of the system allocator: the dataflow allocates and
/// frees many small records (ids, events, candidates); glibc's malloc spent
/// about a third of the replay's time in its free lists.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
