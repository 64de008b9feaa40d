//! The `pxed` binary: parse the command line and run the subcommand
//! (`src/cli/`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc was a quarter of the instructions of a cached render
/// (callgrind, bench/http.sh load); see docs/decisions.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (index 4 in the `mi_option_t`
/// enum of mimalloc.h, v2 and v3; the Rust binding leaves the less stable
/// options unnamed and says to pass their index).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Commit arena memory as it is used, not the whole arena at once: peak RSS
/// in the 10,000-machine storm 63 → 33 MB (docs/decisions.md). Only when the
/// option still has mimalloc's documented default (2), so a renumbered enum
/// in a future mimalloc changes nothing rather than the wrong option.
///
/// It runs from `.init_array`, before Rust's runtime allocates anything: by
/// `main` the first arena (1 GiB of address space) is already reserved and
/// committed, and setting the option there changed nothing (measured).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn tune_allocator() {
    // SAFETY: plain setters/getters of mimalloc's option table, called before
    // main, while no other thread exists (they are not thread safe).
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) == 2 {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(cli::Outcome::Ok) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pxed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
