//! The embedded relational engine: a DataFusion session whose memory is a budget, not a hope.
//!
//! Every operator that can grow with the input (hash aggregation, sort, join) draws from a
//! `FairSpillPool` of the configured size and spills to the spill directory when the pool is
//! full, so a 10x larger day takes longer, not 10x more memory.

use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::CommonConfig;
use crate::error::{Error, Result};
use crate::location::DataRoot;

/// Memory the engine pool gets out of `--memory-limit`: the rest covers what the pool does not
/// see (input decode buffers, Parquet writers, the allocator's slack, the binary itself).
pub fn pool_bytes(memory_limit: u64, outside_pool: u64) -> u64 {
    memory_limit
        .saturating_sub(outside_pool)
        .max(memory_limit / 4)
        .max(8 << 20)
}

/// Builds the session: `threads` partitions, a spilling pool of `pool` bytes, spill files in
/// the configured directory, and the data root's object store registered.
pub fn session(cfg: &CommonConfig, pool: u64) -> Result<SessionContext> {
    std::fs::create_dir_all(&cfg.spill_dir).map_err(|e| Error::io(&cfg.spill_dir, e))?;
    let mut config = SessionConfig::new()
        .with_target_partitions(cfg.threads)
        .with_batch_size(8192)
        .with_information_schema(false);
    let options = config.options_mut();
    // Sorts keep this much back for their merge phase; the default (10 MiB per partition) would
    // eat a small budget whole.
    options.execution.sort_spill_reservation_bytes =
        (pool / 16 / cfg.threads as u64).clamp(1 << 20, 10 << 20) as usize;
    options.execution.parquet.pushdown_filters = true;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(pool as usize)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![cfg.spill_dir.clone()])),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    if let DataRoot::ObjectStore { url, store, .. } = &cfg.data_root {
        let base = url::Url::parse(&format!(
            "{}://{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))
        .map_err(|e| Error::Config(format!("--data-root {url}: {e}")))?;
        ctx.register_object_store(&base, store.clone());
    }
    Ok(ctx)
}
