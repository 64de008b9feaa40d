//! `pxed render` and `pxed explain`: what one machine would be served, and
//! why, from the config on disk (no daemon needed).

use pxed::core::{Arch, Base, ClientString, Identity, Mac, Uuid};

use super::{load, MachineArgs, Outcome};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Ipxe,
    Pxelinux,
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
    let rendered = match format {
        Format::Ipxe => c.policy.ipxe_script(&id, &base),
        Format::Pxelinux => c
            .policy
            .pxelinux_config(&id, &base, None)
            .ok_or_else(|| anyhow::anyhow!("no rule matches this machine"))?,
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
    print!("{}", c.policy.rules.explain(&id));
    Ok(if c.policy.select(&id).is_some() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}
