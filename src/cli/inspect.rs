//! `pxed render` and `pxed explain`: what one machine would be served, and
//! why, from the config on disk (no daemon needed).

use pxed::core::{Arch, Base, ClientString, Identity, Mac, Uuid};

use super::{load, MachineArgs, Outcome};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Ipxe,
    Pxelinux,
    /// The per-machine `grub.cfg` (`boot = "grub"`); pass `--arch efi-x64`
    /// or `efi-arm64` for the serial console commands of that CPU.
    Grub,
}

impl MachineArgs {
    fn identity(&self) -> anyhow::Result<Identity> {
        Ok(Identity {
            mac: Some(self.mac.parse::<Mac>()?),
            product: self.product.as_deref().and_then(ClientString::new),
            serial: self.serial.as_deref().and_then(ClientString::new),
            manufacturer: self.manufacturer.as_deref().and_then(ClientString::new),
            uuid: self.uuid.as_deref().map(str::parse::<Uuid>).transpose()?,
            arch: self.arch.as_deref().map(str::parse::<Arch>).transpose()?,
        })
    }
}

/// The override stored for this machine by a running (or past) daemon.
fn stored_override(
    c: &pxed::config::Config,
    id: &Identity,
) -> anyhow::Result<Option<pxed::core::BootOverride>> {
    let Some(mac) = id.mac else { return Ok(None) };
    super::runtime()?.block_on(async {
        let backend = pxed::storage::Backend::open(c)?;
        backend.read_override(c, mac).await
    })
}

pub fn render(
    machine: &MachineArgs,
    format: Format,
    base_url: Option<&str>,
) -> anyhow::Result<Outcome> {
    let c = load(&machine.config.config)?;
    let id = machine.identity()?;
    let base = match base_url {
        Some(u) => Base::from_url(u)
            .ok_or_else(|| anyhow::anyhow!("--base-url {u:?} is not http://host[:port]"))?,
        None => {
            let shown = c.server.shown_base();
            if let Some(note) = shown.note() {
                eprintln!("note: {note} (or pass --base-url)");
            }
            shown.base().clone()
        }
    };
    // What the machine is served now: its override counts (shown
    // without a callback token; each boot gets its own).
    let active = stored_override(&c, &id)?.map(|boot| pxed::core::Active { boot, token: None });
    let rendered = match format {
        Format::Ipxe => c.policy.script_for(&id, &base, active.as_ref()),
        Format::Pxelinux => c
            .policy
            .menu_for(&id, &base, None, active.as_ref())
            .ok_or_else(|| anyhow::anyhow!("no rule matches this machine"))?,
        Format::Grub => c.policy.grub_for(&id, &base, active.as_ref()),
    };
    print!("{}", rendered.text);
    if rendered.rule.is_none() {
        eprintln!("pxed: no rule matches this machine: that is the retry script it would get");
        return Ok(Outcome::Failed);
    }
    Ok(Outcome::Ok)
}

pub fn explain(machine: &MachineArgs) -> anyhow::Result<Outcome> {
    let c = load(&machine.config.config)?;
    let id = machine.identity()?;
    let ovr = stored_override(&c, &id)?;
    print!("{}", c.policy.explain_for(&id, ovr.as_ref()));
    Ok(if ovr.is_some() || c.policy.select(&id).is_some() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
