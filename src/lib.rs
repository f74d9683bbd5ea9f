//! Tripwire: real-time behavioural triggers for e-commerce on timely and
//! differential dataflow. This crate is the job's edge: command line,
//! configuration, codec, transports (recordings and Kafka), the worker
//! runtime and telemetry. The dataflow logic lives in the `dataflows` crate.

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod generate;
pub mod kafka;
pub mod kafka_props;
pub mod live;
pub mod produce;
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

/// Turns transparent huge pages off for this process (Linux; elsewhere a
/// no-op). Timely's exchanges allocate and free their buffers at a high
/// rate; the allocator hands freed memory back and, with huge pages, every
/// fresh fault makes the kernel zero 2 MiB: a third of the live job's time
/// went there (`perf`, 1M events), and without huge pages the live job ran
/// 1.4x faster in less memory, replay spent half the system time. Called
/// first thing by the binary and the benches.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // of the calling process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
