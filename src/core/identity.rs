//! Who is this machine: the values a booting client tells us about itself, parsed
//! and normalised once so that every adapter (DHCP, TFTP, HTTP) compares the same
//! thing. Nothing here trusts its input: every parser returns an error or a
//! bounded, sanitised value.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest client-supplied string we keep. SMBIOS strings are short in practice;
/// anything longer is truncated rather than rejected so a machine with a silly
/// firmware string still boots.
pub const MAX_CLIENT_STRING: usize = 128;

/// SMBIOS values that firmware vendors ship unfilled. A rule never matches them as
/// if they identified a machine type.
const PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "system product name",
    "system serial number",
    "not specified",
    "not applicable",
    "none",
    "0123456789",
    "",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a MAC address: {0:?} (expected e.g. 52:54:00:12:34:56, 52-54-00-12-34-56, 525400123456 or 01-52-54-00-12-34-56)")]
    Mac(String),
    #[error("not a UUID: {0:?}")]
    Uuid(String),
    #[error("unknown firmware architecture: {0:?}")]
    Arch(String),
}

impl IdentityError {
    /// The same error with the client's value passed through [`sanitize`],
    /// so that its message can be written into a script.
    pub fn sanitized(&self) -> IdentityError {
        match self {
            IdentityError::Mac(v) => IdentityError::Mac(sanitize(v)),
            IdentityError::Uuid(v) => IdentityError::Uuid(sanitize(v)),
            IdentityError::Arch(v) => IdentityError::Arch(sanitize(v)),
        }
    }
}

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `52-54-00-12-34-56`, the form pxelinux uses in `pxelinux.cfg/01-…` names.
    pub fn hyphenated(&self) -> String {
        self.join("-")
    }

    /// `01-52-54-00-12-34-56`: how pxelinux names a machine's config file
    /// (ARP hardware type 1, then the MAC).
    pub fn pxelinux_name(&self) -> String {
        format!("01-{}", self.hyphenated())
    }

    /// The MAC a pxelinux config file name stands for; `None` for the other
    /// names pxelinux tries (UUID, hex IP, `default`).
    pub fn from_pxelinux_name(name: &str) -> Option<Mac> {
        name.strip_prefix("01-")?.parse().ok()
    }

    /// `525400123456`.
    pub fn hex(&self) -> String {
        self.join("")
    }

    /// Lower-case hex bytes joined by `sep`, written without intermediate
    /// strings: a MAC is formatted for every log line.
    fn join(&self, sep: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(12 + 5 * sep.len());
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.join(":"))
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl FromStr for Mac {
    type Err = IdentityError;

    /// Accepts every notation seen in the wild: `52:54:00:ab:cd:ef`,
    /// `52-54-00-AB-CD-EF`, `5254.00ab.cdef`, `525400abcdef`, and pxelinux's
    /// `01-52-54-00-ab-cd-ef` (hardware type 1 = Ethernet prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdentityError::Mac(truncate(s, 40));
        let digits: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        let digits = match digits.len() {
            12 => digits.as_str(),
            // ARP hardware type 01 (Ethernet) in front, as pxelinux writes it.
            14 if digits.starts_with("01") => &digits[2..],
            _ => return Err(err()),
        };
        // from_str_radix alone would accept a sign ("+2"), so check digits first.
        if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Mac(mac))
    }
}

/// An SMBIOS system UUID, kept in its canonical lower-case hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uuid(String);

impl Uuid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uuid {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(IdentityError::Uuid(truncate(s, 40)));
        }
        let h = hex.to_ascii_lowercase();
        Ok(Uuid(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Client firmware architecture, as DHCP option 93 (IANA "Processor
/// Architecture Types") or iPXE's `${platform}`/`${buildarch}` describe it.
///
/// The names are ours on purpose: dhcproto names 7 and 9 the pre-errata way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Arch {
    Bios,
    EfiIa32,
    EfiX64,
    EfiArm32,
    EfiArm64,
    HttpIa32,
    HttpX64,
    HttpArm32,
    HttpArm64,
    /// Any other option 93 value; kept so rules and logs can still name it.
    Other(u16),
}

impl Arch {
    /// Every named architecture, for documentation and `pxed check` messages.
    pub const NAMED: &'static [Arch] = &[
        Arch::Bios,
        Arch::EfiIa32,
        Arch::EfiX64,
        Arch::EfiArm32,
        Arch::EfiArm64,
        Arch::HttpIa32,
        Arch::HttpX64,
        Arch::HttpArm32,
        Arch::HttpArm64,
    ];

    /// Maps an option 93 value. 7 and 9 are both EFI x64 in practice (VMware and
    /// others send 9).
    pub fn from_option93(code: u16) -> Arch {
        match code {
            0 => Arch::Bios,
            6 => Arch::EfiIa32,
            7 | 9 => Arch::EfiX64,
            10 => Arch::EfiArm32,
            11 => Arch::EfiArm64,
            15 => Arch::HttpIa32,
            16 => Arch::HttpX64,
            18 => Arch::HttpArm32,
            19 => Arch::HttpArm64,
            other => Arch::Other(other),
        }
    }

    /// Maps iPXE's `${platform}` (`pcbios`, `efi`) and `${buildarch}` (`i386`,
    /// `x86_64`, `arm32`, `arm64`).
    pub fn from_ipxe(platform: &str, buildarch: &str) -> Result<Arch, IdentityError> {
        let err = || IdentityError::Arch(truncate(&format!("{platform}/{buildarch}"), 40));
        match (platform, buildarch) {
            ("pcbios", _) => Ok(Arch::Bios),
            ("efi", "i386") => Ok(Arch::EfiIa32),
            ("efi", "x86_64") => Ok(Arch::EfiX64),
            ("efi", "arm32") => Ok(Arch::EfiArm32),
            ("efi", "arm64") => Ok(Arch::EfiArm64),
            _ => Err(err()),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Arch::Bios => "bios".into(),
            Arch::EfiIa32 => "efi-ia32".into(),
            Arch::EfiX64 => "efi-x64".into(),
            Arch::EfiArm32 => "efi-arm32".into(),
            Arch::EfiArm64 => "efi-arm64".into(),
            Arch::HttpIa32 => "http-ia32".into(),
            Arch::HttpX64 => "http-x64".into(),
            Arch::HttpArm32 => "http-arm32".into(),
            Arch::HttpArm64 => "http-arm64".into(),
            Arch::Other(n) => format!("arch-{n}"),
        }
    }

    /// UEFI firmware (including UEFI HTTP Boot), as opposed to legacy BIOS.
    pub fn is_efi(&self) -> bool {
        !matches!(self, Arch::Bios | Arch::Other(_))
    }

    /// UEFI HTTP Boot clients need an `http://` URL and `HTTPClient` in option 60.
    pub fn is_http_boot(&self) -> bool {
        matches!(
            self,
            Arch::HttpIa32 | Arch::HttpX64 | Arch::HttpArm32 | Arch::HttpArm64
        )
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.name()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Arch {
    type Err = IdentityError;

    /// Accepts our names (`bios`, `efi-x64`, …), an option 93 number, or
    /// `arch-N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if let Some(a) = Arch::NAMED.iter().find(|a| a.name() == t) {
            return Ok(*a);
        }
        let num = t.strip_prefix("arch-").unwrap_or(&t);
        num.parse::<u16>()
            .map(Arch::from_option93)
            .map_err(|_| IdentityError::Arch(truncate(s, 40)))
    }
}

/// A free-form string reported by the client (SMBIOS product, serial,
/// manufacturer). Two views: `raw` for matching rules exactly as the firmware
/// reported it, and `safe` for templates, where every byte that could mean
/// something to iPXE or pxelinux is replaced (see [`sanitize`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientString {
    raw: String,
}

impl ClientString {
    pub fn new(s: &str) -> Option<ClientString> {
        let raw = truncate(s.trim(), MAX_CLIENT_STRING);
        if PLACEHOLDERS.contains(&raw.to_ascii_lowercase().as_str()) {
            None
        } else {
            Some(ClientString { raw })
        }
    }

    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn safe(&self) -> String {
        sanitize(&self.raw)
    }
}

/// Makes a client value inert in an iPXE script or pxelinux config: keeps
/// letters, digits, space and `. _ - / : [ ] ( ) + , @`, and turns everything
/// else (newlines, `$`, `{`, `}`, `;`, `&`, `|`, `#`, quotes, backslashes,
/// non-ASCII) into `_`. Neither language can start a command, expand a
/// variable, or end a line with what is left.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .take(MAX_CLIENT_STRING)
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-/:[]()+,@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The `key=value` pairs of a query string, values percent-decoded (invalid
/// UTF-8 replaced) and `+` left a plus, as iPXE sends it.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (
            key,
            percent_decode_str(value).decode_utf8_lossy().into_owned(),
        )
    })
}

/// What a pxelinux menu request names: the machine (the config file name
/// `01-<mac>`, plus the identity pxed put in the query when it chained
/// lpxelinux) and the rule pxed chose then (`rule=`). HTTP and the fuzz target
/// both read a menu request with [`MenuRequest::parse`], one pass over the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuRequest {
    pub mac: Mac,
    /// The identity, its `mac` set.
    pub id: Identity,
    pub rule_hint: Option<String>,
}

impl MenuRequest {
    /// `None` when `name` is not a per-machine config name (pxelinux also
    /// tries UUIDs, hex IP addresses and `default`). A query that does not
    /// read as an identity leaves only the MAC.
    pub fn parse(name: &str, query: &str) -> Option<MenuRequest> {
        let mac = Mac::from_pxelinux_name(name)?;
        let mut rule_hint = None;
        let pairs = query_pairs(query).filter(|(k, v)| {
            if *k != "rule" {
                return true;
            }
            if rule_hint.is_none() {
                rule_hint = Some(v.clone());
            }
            false
        });
        let mut id = Identity::from_pairs(pairs).unwrap_or_default();
        id.mac = Some(mac);
        Some(MenuRequest { mac, id, rule_hint })
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the
/// result can sit in a URL, an iPXE script or a pxelinux config unquoted.
pub fn query_escape(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Everything pxed knows about a booting machine at one moment. Any part may be
/// missing: a PXE ROM's DHCP request has a MAC and an arch but no SMBIOS data; a
/// classic pxelinux config request has only the MAC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    pub mac: Option<Mac>,
    pub product: Option<ClientString>,
    pub serial: Option<ClientString>,
    pub manufacturer: Option<ClientString>,
    pub uuid: Option<Uuid>,
    pub arch: Option<Arch>,
}

impl Identity {
    pub fn with_mac(mac: Mac) -> Identity {
        Identity {
            mac: Some(mac),
            ..Identity::default()
        }
    }

    /// Reads the query pxed's `boot.ipxe` sends:
    /// `product=…&serial=…&manufacturer=…&uuid=…&mac=…&platform=…&buildarch=…`,
    /// also the seed CGI's `type=` for product and an explicit `arch=`.
    ///
    /// Values are percent-decoded but `+` stays a plus: iPXE does not encode it
    /// without `:uristring`. A MAC that does not parse is an error (the machine
    /// cannot be identified); a malformed UUID or arch is dropped, because
    /// firmware does report garbage there and the machine must still boot.
    pub fn from_query(query: &str) -> Result<Identity, IdentityError> {
        Identity::from_pairs(query_pairs(query))
    }

    /// [`Identity::from_query`] over pairs already split and decoded.
    pub fn from_pairs<'q>(
        pairs: impl Iterator<Item = (&'q str, String)>,
    ) -> Result<Identity, IdentityError> {
        let mut id = Identity::default();
        let (mut platform, mut buildarch) = (None, None);
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "product" | "type" => id.product = ClientString::new(value),
                "serial" => id.serial = ClientString::new(value),
                "manufacturer" => id.manufacturer = ClientString::new(value),
                "uuid" => id.uuid = value.parse().ok(),
                "mac" => id.mac = Some(value.parse()?),
                "arch" => id.arch = value.parse().ok(),
                "platform" => platform = Some(value.to_string()),
                "buildarch" => buildarch = Some(value.to_string()),
                _ => {}
            }
        }
        if id.arch.is_none() {
            if let (Some(p), Some(b)) = (platform, buildarch) {
                id.arch = Arch::from_ipxe(&p, &b).ok();
            }
        }
        Ok(id)
    }

    /// The inverse of [`Identity::from_query`]. Every value is percent-encoded,
    /// so the result holds no character that iPXE or pxelinux treats specially.
    pub fn to_query(&self) -> String {
        let pairs = [
            (
                "product",
                self.product.as_ref().map(|v| v.raw().to_string()),
            ),
            ("serial", self.serial.as_ref().map(|v| v.raw().to_string())),
            (
                "manufacturer",
                self.manufacturer.as_ref().map(|v| v.raw().to_string()),
            ),
            ("uuid", self.uuid.as_ref().map(|v| v.to_string())),
            ("mac", self.mac.map(|v| v.to_string())),
            ("arch", self.arch.map(|v| v.name())),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", query_escape(v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_notations_normalise_to_one_value() {
        let want = Mac([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for s in [
            "52:54:00:ab:cd:ef",
            "52-54-00-AB-CD-EF",
            "525400abcdef",
            "5254.00ab.cdef",
            "01-52-54-00-ab-cd-ef",
            " 52:54:00:AB:cd:EF ",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "52:54:00:ab:cd",
            "zz:54:00:ab:cd:ef",
            "52:54:00:ab:cd:ef:01",
            "+2:54:00:ab:cd:ef",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert_eq!(want.hyphenated(), "52-54-00-ab-cd-ef");
        assert_eq!(Mac::from_pxelinux_name(&want.pxelinux_name()), Some(want));
        assert_eq!(Mac::from_pxelinux_name("default"), None);
        assert_eq!(want.hex(), "525400abcdef");
    }

    #[test]
    fn arch_from_option93_folds_7_and_9() {
        assert_eq!(Arch::from_option93(7), Arch::EfiX64);
        assert_eq!(Arch::from_option93(9), Arch::EfiX64);
        assert_eq!(Arch::from_option93(16), Arch::HttpX64);
        assert_eq!("efi-x64".parse::<Arch>().unwrap(), Arch::EfiX64);
        assert_eq!("9".parse::<Arch>().unwrap(), Arch::EfiX64);
        assert_eq!(Arch::from_ipxe("pcbios", "i386").unwrap(), Arch::Bios);
        assert_eq!(Arch::from_ipxe("efi", "x86_64").unwrap(), Arch::EfiX64);
        assert!("efi-z80".parse::<Arch>().is_err());
    }

    #[test]
    fn placeholders_are_not_identities() {
        assert!(ClientString::new("To Be Filled By O.E.M.").is_none());
        assert!(ClientString::new("Default string").is_none());
        assert!(ClientString::new("Express5800/i120Ra-e1").is_some());
    }

    #[test]
    fn sanitize_leaves_nothing_executable() {
        let s = sanitize("x\nchain http://evil/${a};b&&c||d #e\"f'g\\h`i\u{e9}");
        assert!(!s.contains(['\n', '$', '{', '}', ';', '&', '|', '#', '"', '\'', '\\', '`']));
        assert_eq!(
            sanitize("Express5800/i120Ra-e1 [N8100-1482Y]"),
            "Express5800/i120Ra-e1 [N8100-1482Y]"
        );
    }

    #[test]
    fn query_round_trip_and_ipxe_encodings() {
        let id = Identity::from_query(
            "product=Express5800%2Fi120Ra-e1%20%5BN8100-1482Y%5D&mac=52%3A54%3A00%3A12%3A34%3A56&platform=pcbios&buildarch=i386",
        )
        .unwrap();
        assert_eq!(
            id.product.as_ref().unwrap().raw(),
            "Express5800/i120Ra-e1 [N8100-1482Y]"
        );
        assert_eq!(id.mac, Some("52:54:00:12:34:56".parse().unwrap()));
        assert_eq!(id.arch, Some(Arch::Bios));
        assert_eq!(Identity::from_query(&id.to_query()).unwrap(), id);
        // The seed's `type=`, and a literal plus that must stay a plus.
        let seed = Identity::from_query("type=A+B&mac=52:54:00:12:34:56").unwrap();
        assert_eq!(seed.product.unwrap().raw(), "A+B");
        assert!(Identity::from_query("mac=nonsense").is_err());
        assert_eq!(
            Identity::from_query("uuid=garbage&arch=z80").unwrap(),
            Identity::default()
        );
    }

    #[test]
    fn uuid_is_canonical() {
        let u: Uuid = "4C4C4544-0051-3910-8047-B4C04F564433".parse().unwrap();
        assert_eq!(u.as_str(), "4c4c4544-0051-3910-8047-b4c04f564433");
        assert!("not-a-uuid".parse::<Uuid>().is_err());
    }
}
