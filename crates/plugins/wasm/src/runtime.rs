//! The sandbox: one wasmtime engine per server (created at the first plugin), a linker with
//! the `nexus:plugin` host functions and WASI with nothing granted, and a fresh instance per
//! call from a pre-instantiated component and the pooling allocator. Each call runs under the
//! plugin's limits: memory (a resource limiter), wall time (epoch interruption) and optionally
//! fuel.
//!
//! Calls run on the async runtime's own threads, on a fiber: a host function that waits on the
//! database suspends the fiber instead of blocking a thread, and a guest that computes for long
//! yields at every epoch tick. Handing each call to a blocking thread instead cost two thread
//! switches per call, measured as more than the call itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nexus_kernel::principal::Principal;
use prometheus_client::metrics::histogram::Histogram;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::env::PluginEnv;

/// Generated from `wit/nexus-plugin` (the versions in `manifest::SUPPORTED_WIT`).
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "guest",
        path: "../../../wit/nexus-plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::nexus::plugin::types::{Caller, Event, Level, Request, Response};
use bindings::{Guest, GuestPre};

/// How often the epoch advances: the granularity of the time limits.
const TICK: Duration = Duration::from_millis(10);

/// Instances alive at once, over every plugin: more concurrent calls wait for a slot.
pub const MAX_INSTANCES: u32 = 256;

/// Bytes of a returned memory or table slot reset by memset rather than `madvise`: with
/// PAGEMAP_SCAN only the pages a call touched are rewritten, so this may be large; without it
/// the whole low range is rewritten on every reset, so it stays at what a small guest dirties.
const KEEP_RESIDENT_SCANNED: usize = 16 * 1024 * 1024;
const KEEP_RESIDENT_LOW: usize = 1024 * 1024;

/// Slots whose reset needs an `madvise` are reset this many at a time (one TLB flush per
/// batch instead of one per instance).
const DECOMMIT_BATCH: usize = 16;

/// The most memory a plugin may be given, whatever its manifest asks for.
pub const MAX_MEMORY_BYTES: usize = 512 * 1024 * 1024;

/// The engine and the linker, shared by every plugin of the server.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    stop: Arc<AtomicBool>,
    /// Instances created.
    pub instantiations: AtomicU64,
    /// Time to a fresh instance (`nexus_wasm_instantiate_seconds`).
    instantiate: Histogram,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A component compiled and linked, ready to be instantiated for a call.
pub struct Compiled {
    pre: GuestPre<HostState>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").finish_non_exhaustive()
    }
}

/// What [`Runtime::call`] runs on the instance: one of the guest's exports, awaited.
pub type GuestCall<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Why a call did not return normally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("exceeded its memory limit of {0} MiB")]
    Memory(u32),
    #[error("exceeded its fuel limit of {0}")]
    Fuel(u64),
    #[error("trapped: {0}")]
    Trap(String),
    /// Every instance slot is taken.
    #[error("is at its limit of concurrent instances")]
    Busy,
}

impl CallError {
    /// Whether the plugin misbehaved (counted towards disabling it).
    pub fn is_fault(&self) -> bool {
        !matches!(self, CallError::Busy)
    }
}

/// What a store holds for one call: WASI (nothing granted), the plugin's environment and
/// caller, and the memory limit.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    pub(crate) env: Arc<PluginEnv>,
    pub(crate) caller: Option<Principal>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Refuses memory growth above the plugin's limit and remembers that it did, so that the trap
/// that follows is reported as what it is.
struct MemoryLimiter {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl Runtime {
    pub fn new(instantiate: Histogram) -> Result<Arc<Self>, String> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 8)
            .total_memories(MAX_INSTANCES * 2)
            .total_tables(MAX_INSTANCES * 8)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES);
        // A slot given back is reset for its next instance. By default that is an `madvise`
        // of the whole memory, and on a multi-threaded server every `madvise` flushes the TLB
        // of every core (an IPI): measured, that was most of a small call's time. Instead the
        // pages a call dirtied are found with Linux's PAGEMAP_SCAN and rewritten with memset,
        // staying resident for the next instance; without PAGEMAP_SCAN only the low pages
        // (where a guest's stack and data sit) are memset, the rest is still madvised.
        let scan = PoolingAllocationConfig::is_pagemap_scan_available();
        pool.pagemap_scan(if scan { Enabled::Yes } else { Enabled::No })
            .linear_memory_keep_resident(if scan { KEEP_RESIDENT_SCANNED } else { KEEP_RESIDENT_LOW })
            .table_keep_resident(if scan { KEEP_RESIDENT_SCANNED } else { KEEP_RESIDENT_LOW })
            .decommit_batch_size(DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("cannot create the WebAssembly engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("cannot link WASI: {e}"))?;
        Guest::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link the host functions: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = engine.clone();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name(String::from("wasm-epoch"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(Arc::new(Self { engine, linker, stop, instantiations: AtomicU64::new(0), instantiate }))
    }

    /// Stops the epoch thread (the server is shutting down).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Compiles and links a component: an error names what is wrong (not a component, an
    /// import this host does not offer). Blocking: seconds for a large component.
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, String> {
        let component =
            Component::new(&self.engine, wasm).map_err(|e| format!("plugin.wasm is not a valid component: {e:#}"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| format!("plugin.wasm needs imports this server does not offer: {e:#}"))?;
        let pre =
            GuestPre::new(pre).map_err(|e| format!("plugin.wasm does not export the nexus:plugin world: {e:#}"))?;
        Ok(Compiled { pre })
    }

    /// Runs `f` on a fresh instance of `compiled` for `env`, within its limits.
    pub async fn call<R, F>(
        &self,
        compiled: &Compiled,
        env: Arc<PluginEnv>,
        caller: Option<Principal>,
        f: F,
    ) -> Result<R, CallError>
    where
        F: for<'a> FnOnce(&'a Guest, &'a mut Store<HostState>) -> GuestCall<'a, R>,
    {
        let limits = env.limits;
        let max = usize::try_from(u64::from(limits.memory_mb) * 1024 * 1024).unwrap_or(MAX_MEMORY_BYTES);
        let state = HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max, hit: false },
            env,
            caller,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let fuel = limits.fuel.unwrap_or(u64::MAX);
        store.set_fuel(fuel).map_err(|e| CallError::Trap(e.to_string()))?;
        // At every tick the guest yields its thread to other work, until its time is up.
        let started = Instant::now();
        let timeout = Duration::from_millis(limits.timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if started.elapsed() >= timeout { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        let instance = compiled.pre.instantiate_async(&mut store).await;
        self.instantiate.observe(started.elapsed().as_secs_f64());
        let outcome = match instance {
            Ok(guest) => f(&guest, &mut store).await,
            Err(e) => {
                let text = format!("{e:#}");
                if text.contains("concurrent") || text.contains("maximum") && text.contains("limit") {
                    return Err(CallError::Busy);
                }
                Err(e)
            }
        };
        outcome.map_err(|e| {
            if store.data().limiter.hit {
                return CallError::Memory(limits.memory_mb);
            }
            match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => CallError::Timeout(limits.timeout_ms),
                Some(Trap::OutOfFuel) => CallError::Fuel(fuel),
                Some(trap) => CallError::Trap(trap.to_string()),
                None => CallError::Trap(format!("{e:#}").lines().next().unwrap_or_default().to_string()),
            }
        })
    }
}
