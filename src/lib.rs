//! pxed: a network-boot provisioning daemon. The boot decision is a pure core
//! ([`core`]) over a validated config snapshot ([`config`]); the protocols are
//! thin adapters around it ([`http`]); [`server`] wires them together.

pub mod assets;
pub mod check;
pub mod config;
pub mod core;
pub mod dhcp;

pub mod events;
pub mod http;
pub mod listen;
pub mod machines;
pub mod metrics;
pub mod ra;
pub mod reload;
pub mod server;
pub mod storage;
mod sync;
pub mod tftp;

#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
