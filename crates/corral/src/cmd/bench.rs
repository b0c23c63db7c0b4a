//! `corral bench`: load a ZooKeeper-protocol server with one workload and report throughput,
//! latency percentiles and (given its pid) the server's CPU and memory use.

pub use crate::bench::Options as Args;

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::bench::run(args)
}
