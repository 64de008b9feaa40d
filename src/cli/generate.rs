//! `pxed generate --out DIR` (hidden): the man pages and shell completions,
//! from the same clap definitions the binary parses with, so they cannot
//! drift from the real flags. Run while building the Debian package
//! (`contrib/deb.sh`) rather than from build.rs: a build script would compile
//! the CLI definitions a second time on every build and could only write into
//! cargo's hashed `OUT_DIR`, where cargo-deb's asset list cannot name it.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Outcome};

pub fn run(out: &Path) -> anyhow::Result<Outcome> {
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    // pxed.1 and one page per subcommand (pxed-serve.1, …), as git does.
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "pxed", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    Ok(Outcome::Ok)
}
