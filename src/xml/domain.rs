//! Domain XML: an operator's per-OS template streamed through quick-xml's reader and writer, with
//! the elements api-web manages inserted as events (so every value is escaped by construction).
//!
//! Managed, and so forbidden in a template: `name`, `uuid`, `title`, `description`, `metadata`,
//! `memory`, `currentMemory`, `vcpu`, `os` under `<domain>`, and `emulator`, `disk`, `interface`,
//! `serial`, `console` under `<devices>`. Anything else in the template (features, clock, cpu,
//! lifecycle actions, input, video, graphics, channels...) reaches every new domain unchanged.

use super::devices::{to_xml, Disk, Interface};
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use serde::Deserialize;
use std::io::Write;

/// XML namespace of api-web's `<metadata>` element.
pub const METADATA_NS: &str = "https://api-web.invalid/xmlns/instance/1";

const MANAGED_TOP: &[&str] = &[
    "name",
    "uuid",
    "title",
    "description",
    "metadata",
    "memory",
    "currentMemory",
    "vcpu",
    "os",
];
const MANAGED_DEVICES: &[&str] = &["emulator", "disk", "interface", "serial", "console"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("not well-formed XML at byte {pos}: {msg}")]
    Syntax { pos: u64, msg: String },
    #[error("the root element must be <domain>, found <{0}>")]
    Root(String),
    #[error("<{0}> is managed by api-web and must not be in a template")]
    Managed(String),
    #[error("{0}")]
    Other(String),
}

/// Everything api-web decides about a domain.
pub struct DomainSpec<'a> {
    pub domain_type: &'a str,
    pub name: &'a str,
    pub uuid: &'a str,
    pub title: &'a str,
    pub description: &'a str,
    pub instance_id: &'a str,
    /// The database's deployment id (`db::deployment_id`): marks the domain as this
    /// deployment's, so that reconciliation may remove it when no row names it.
    pub deployment: &'a str,
    pub memory_mib: u64,
    pub vcpu: u32,
    pub machine: &'a str,
    pub emulator: &'a str,
    pub disks: &'a [Disk],
    pub interfaces: &'a [Interface],
    /// File that receives the serial console's output.
    pub console_log: &'a str,
}

fn name_of(e: &BytesStart) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

fn syntax<E: std::fmt::Display>(pos: u64) -> impl Fn(E) -> TemplateError {
    move |e| TemplateError::Syntax {
        pos,
        msg: e.to_string(),
    }
}

type W = Writer<Vec<u8>>;

fn text_element(w: &mut W, name: &str, attrs: &[(&str, &str)], text: &str) -> std::io::Result<()> {
    let mut e = w.create_element(name);
    for a in attrs {
        e = e.with_attribute(*a);
    }
    e.write_text_content(BytesText::new(text))?;
    Ok(())
}

fn empty_element(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> std::io::Result<()> {
    let mut e = w.create_element(name);
    for a in attrs {
        e = e.with_attribute(*a);
    }
    e.write_empty()?;
    Ok(())
}

fn write_header(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    text_element(w, "name", &[], s.name)?;
    text_element(w, "uuid", &[], s.uuid)?;
    text_element(w, "title", &[], s.title)?;
    text_element(w, "description", &[], s.description)?;
    w.create_element("metadata").write_inner_content(|w| {
        w.create_element("apiweb:instance")
            .with_attribute(("xmlns:apiweb", METADATA_NS))
            .write_inner_content(|w| {
                text_element(w, "apiweb:id", &[], s.instance_id)?;
                text_element(w, "apiweb:deployment", &[], s.deployment)?;
                Ok(())
            })?;
        Ok(())
    })?;
    text_element(w, "memory", &[("unit", "MiB")], &s.memory_mib.to_string())?;
    text_element(w, "vcpu", &[("placement", "static")], &s.vcpu.to_string())?;
    w.create_element("os").write_inner_content(|w| {
        text_element(
            w,
            "type",
            &[("arch", "x86_64"), ("machine", s.machine)],
            "hvm",
        )?;
        empty_element(w, "boot", &[("dev", "hd")])?;
        Ok(())
    })?;
    Ok(())
}

fn write_managed_devices(w: &mut W, s: &DomainSpec) -> std::io::Result<()> {
    let raw = |w: &mut W, xml: Result<String, quick_xml::SeError>| -> std::io::Result<()> {
        let xml = xml.map_err(|e| std::io::Error::other(e.to_string()))?;
        // Made by quick-xml's escaping serializer: safe to copy as is.
        w.get_mut().write_all(xml.as_bytes())
    };
    for d in s.disks {
        raw(w, to_xml(d))?;
    }
    for i in s.interfaces {
        raw(w, to_xml(i))?;
    }
    w.create_element("serial")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            empty_element(w, "log", &[("file", s.console_log), ("append", "on")])?;
            empty_element(w, "target", &[("port", "0")])?;
            Ok(())
        })?;
    w.create_element("console")
        .with_attribute(("type", "pty"))
        .write_inner_content(|w| {
            empty_element(w, "target", &[("type", "serial"), ("port", "0")])?;
            Ok(())
        })?;
    Ok(())
}

/// The domain XML for `spec` from a template.
pub fn build(template: &str, spec: &DomainSpec) -> Result<String, TemplateError> {
    let mut r = Reader::from_str(template);
    let mut b = Builder {
        w: Writer::new(Vec::new()),
        spec,
        depth: 0,
        in_devices: false,
        saw_devices: false,
        saw_domain: false,
    };
    loop {
        let pos = r.buffer_position();
        match r.read_event().map_err(syntax(pos))? {
            Event::Start(e) => b.start(e, false, pos)?,
            Event::Empty(e) => b.start(e, true, pos)?,
            Event::End(e) => b.end(e)?,
            Event::DocType(_) => {
                return Err(TemplateError::Other("a DOCTYPE is not allowed".into()));
            }
            Event::Eof => break,
            other => b.w.write_event(other).map_err(io)?,
        }
    }
    if !b.saw_domain {
        return Err(TemplateError::Root("(none)".into()));
    }
    String::from_utf8(b.w.into_inner()).map_err(|e| TemplateError::Other(e.to_string()))
}

fn io(e: std::io::Error) -> TemplateError {
    TemplateError::Other(format!("writing XML: {e}"))
}

/// The template being copied: where the reader is, and what has been written.
struct Builder<'s, 'a> {
    w: W,
    spec: &'s DomainSpec<'a>,
    /// 0 outside `<domain>`, 1 inside it, 2 inside one of its children...
    depth: usize,
    in_devices: bool,
    saw_devices: bool,
    saw_domain: bool,
}

impl Builder<'_, '_> {
    /// An opening (or empty) element: the root, `<devices>`, a managed one (refused), or a copy.
    fn start(&mut self, e: BytesStart, empty: bool, pos: u64) -> Result<(), TemplateError> {
        let name = name_of(&e);
        if self.depth == 0 {
            return self.open_domain(&e, name, empty, pos);
        }
        if self.depth == 1 && MANAGED_TOP.contains(&name.as_str()) {
            return Err(TemplateError::Managed(name));
        }
        if self.depth == 2 && self.in_devices && MANAGED_DEVICES.contains(&name.as_str()) {
            return Err(TemplateError::Managed(format!("devices/{name}")));
        }
        if self.depth == 1 && name == "devices" {
            return self.open_devices(empty);
        }
        if empty {
            self.w.write_event(Event::Empty(e)).map_err(io)
        } else {
            self.depth += 1;
            self.w.write_event(Event::Start(e)).map_err(io)
        }
    }

    /// `<domain>` with our `type` and the header api-web manages (name, uuid, memory, os...).
    fn open_domain(
        &mut self,
        e: &BytesStart,
        name: String,
        empty: bool,
        pos: u64,
    ) -> Result<(), TemplateError> {
        if name != "domain" {
            return Err(TemplateError::Root(name));
        }
        if self.saw_domain {
            return Err(TemplateError::Other("more than one <domain>".into()));
        }
        self.saw_domain = true;
        let mut start = BytesStart::new("domain");
        start.push_attribute(("type", self.spec.domain_type));
        for a in e.attributes() {
            let a = a.map_err(syntax(pos))?;
            if a.key.as_ref() != b"type" {
                start.push_attribute(a);
            }
        }
        self.w.write_event(Event::Start(start)).map_err(io)?;
        write_header(&mut self.w, self.spec).map_err(io)?;
        if empty {
            write_devices_block(&mut self.w, self.spec).map_err(io)?;
            self.saw_devices = true;
            return self
                .w
                .write_event(Event::End(BytesEnd::new("domain")))
                .map_err(io);
        }
        self.depth = 1;
        Ok(())
    }

    /// The template's `<devices>`: our emulator first, our disks and NICs at its end.
    fn open_devices(&mut self, empty: bool) -> Result<(), TemplateError> {
        if self.saw_devices {
            return Err(TemplateError::Other("more than one <devices>".into()));
        }
        self.saw_devices = true;
        self.w
            .write_event(Event::Start(BytesStart::new("devices")))
            .map_err(io)?;
        text_element(&mut self.w, "emulator", &[], self.spec.emulator).map_err(io)?;
        if empty {
            write_managed_devices(&mut self.w, self.spec).map_err(io)?;
            return self
                .w
                .write_event(Event::End(BytesEnd::new("devices")))
                .map_err(io);
        }
        self.in_devices = true;
        self.depth += 1;
        Ok(())
    }

    /// A closing element: our devices go before `</devices>`, or as a whole block before
    /// `</domain>` when the template has none.
    fn end(&mut self, e: BytesEnd) -> Result<(), TemplateError> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 1 && self.in_devices && name == "devices" {
            write_managed_devices(&mut self.w, self.spec).map_err(io)?;
            self.in_devices = false;
        }
        if self.depth == 0 && name == "domain" && !self.saw_devices {
            write_devices_block(&mut self.w, self.spec).map_err(io)?;
            self.saw_devices = true;
        }
        self.w.write_event(Event::End(e)).map_err(io)
    }
}

fn write_devices_block(w: &mut W, spec: &DomainSpec) -> std::io::Result<()> {
    w.create_element("devices").write_inner_content(|w| {
        text_element(w, "emulator", &[], spec.emulator)?;
        write_managed_devices(w, spec)
    })?;
    Ok(())
}

/// Checks a template: well-formed, a `<domain>` root, no managed element, and a domain built
/// from it parses back.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    let disks = [];
    let spec = DomainSpec {
        domain_type: "qemu",
        name: "i-00000000",
        uuid: "00000000-0000-4000-8000-000000000000",
        title: "check",
        description: "",
        instance_id: "i-00000000",
        deployment: "00000000-0000-4000-8000-000000000000",
        memory_mib: 256,
        vcpu: 1,
        machine: "pc",
        emulator: "/usr/bin/qemu-system-x86_64",
        disks: &disks,
        interfaces: &[],
        console_log: "/dev/null",
    };
    let xml = build(template, &spec)?;
    parse(&xml)
        .map_err(|e| TemplateError::Other(format!("the built domain does not parse: {e}")))?;
    Ok(())
}

// ---------------------------------------------------------------- reading libvirt's XML

/// What api-web reads back from a domain's XML (live or persistent); everything else is ignored.
#[derive(Debug, Deserialize)]
pub struct ParsedDomain {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: Option<ParsedMetadata>,
    pub devices: ParsedDevices,
}

#[derive(Debug, Deserialize)]
pub struct ParsedMetadata {
    #[serde(rename = "instance", default)]
    pub instance: Option<ParsedInstanceMeta>,
}

#[derive(Debug, Deserialize)]
pub struct ParsedInstanceMeta {
    pub id: String,
    /// Absent in domains made before deployments were marked.
    #[serde(default)]
    pub deployment: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ParsedDevices {
    #[serde(default)]
    pub disk: Vec<ParsedDisk>,
    #[serde(default)]
    pub interface: Vec<ParsedInterface>,
}

#[derive(Debug, Deserialize)]
pub struct ParsedDisk {
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(default)]
    pub target: Option<ParsedTarget>,
    #[serde(default)]
    pub serial: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ParsedTarget {
    #[serde(rename = "@dev")]
    pub dev: String,
}

#[derive(Debug, Deserialize)]
pub struct ParsedInterface {
    #[serde(default)]
    pub mac: Option<super::devices::Mac>,
}

pub fn parse(xml: &str) -> Result<ParsedDomain, quick_xml::DeError> {
    quick_xml::de::from_str(xml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::devices::RbdAccess;

    const TEMPLATE: &str =
        "<!-- operator's comment -->\n<domain>\n  <features><acpi/></features>\n  \
        <devices>\n    <input type='tablet' bus='usb'/>\n  </devices>\n</domain>\n";

    fn spec<'a>(title: &'a str, disks: &'a [Disk], ifs: &'a [Interface]) -> DomainSpec<'a> {
        DomainSpec {
            domain_type: "qemu",
            name: "i-1a2b3c4d",
            uuid: "7d3e1c53-0d7e-4c1e-9b7a-0f2b8b0c1a11",
            title,
            description: "described <&>",
            instance_id: "i-1a2b3c4d",
            deployment: "0f0e0d0c-0b0a-0908-0706-050403020100",
            memory_mib: 256,
            vcpu: 2,
            machine: "pc",
            emulator: "/usr/bin/qemu-system-x86_64",
            disks,
            interfaces: ifs,
            console_log: "/var/log/libvirt/qemu/i-1a2b3c4d.console.log",
        }
    }

    fn root_disk() -> Disk {
        let hosts = ["127.0.0.1:16789".to_string()];
        let a = RbdAccess {
            mon_hosts: &hosts,
            user: "libvirt",
            secret_uuid: "8d3b6f2a-51c4-4e0b-9c1f-a9e0c0de0a01",
        };
        Disk::rbd(&a, "volumes", "vol-00000001", "vda", "vol-00000001")
    }

    #[test]
    fn domain_snapshot() {
        let disks = [root_disk()];
        let ifs = [Interface::bridge("apiwebbr0", "52:54:00:00:00:01")];
        let xml = build(TEMPLATE, &spec("web <1>", &disks, &ifs)).unwrap();
        let expected = format!(
            "<!-- operator's comment -->\n<domain type=\"qemu\">\
<name>i-1a2b3c4d</name><uuid>7d3e1c53-0d7e-4c1e-9b7a-0f2b8b0c1a11</uuid>\
<title>web &lt;1&gt;</title><description>described &lt;&amp;&gt;</description>\
<metadata><apiweb:instance xmlns:apiweb=\"{METADATA_NS}\"><apiweb:id>i-1a2b3c4d</apiweb:id><apiweb:deployment>0f0e0d0c-0b0a-0908-0706-050403020100</apiweb:deployment></apiweb:instance></metadata>\
<memory unit=\"MiB\">256</memory><vcpu placement=\"static\">2</vcpu>\
<os><type arch=\"x86_64\" machine=\"pc\">hvm</type><boot dev=\"hd\"/></os>\n  \
<features><acpi/></features>\n  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\n    \
<input type='tablet' bus='usb'/>\n  {disk}{nic}\
<serial type=\"pty\"><log file=\"/var/log/libvirt/qemu/i-1a2b3c4d.console.log\" append=\"on\"/><target port=\"0\"/></serial>\
<console type=\"pty\"><target type=\"serial\" port=\"0\"/></console></devices>\n</domain>\n",
            disk = to_xml(&disks[0]).unwrap(),
            nic = to_xml(&ifs[0]).unwrap(),
        );
        assert_eq!(xml, expected);
    }

    #[test]
    fn domain_parse_round_trip() {
        let disks = [root_disk()];
        let ifs = [Interface::bridge("apiwebbr0", "52:54:00:00:00:01")];
        let xml = build(TEMPLATE, &spec("web", &disks, &ifs)).unwrap();
        let d = parse(&xml).unwrap();
        assert_eq!(d.name, "i-1a2b3c4d");
        assert_eq!(d.title.as_deref(), Some("web"));
        assert_eq!(d.metadata.unwrap().instance.unwrap().id, "i-1a2b3c4d");
        assert_eq!(d.devices.disk.len(), 1);
        assert_eq!(d.devices.disk[0].serial.as_deref(), Some("vol-00000001"));
        assert_eq!(d.devices.disk[0].target.as_ref().unwrap().dev, "vda");
        assert_eq!(d.devices.interface.len(), 1);
        assert_eq!(
            d.devices.interface[0].mac.as_ref().unwrap().address,
            "52:54:00:00:00:01"
        );
    }

    /// User text cannot add elements: the domain has exactly the devices we put there.
    #[test]
    fn instance_name_cannot_inject_devices() {
        let evil =
            "</title><devices><disk type='file'><source file='/etc/shadow'/></disk></devices>";
        let disks = [root_disk()];
        let mut s = spec(evil, &disks, &[]);
        s.description = evil;
        let xml = build(TEMPLATE, &s).unwrap();
        assert!(!xml.contains("<source file="), "{xml}");
        let d = parse(&xml).unwrap();
        assert_eq!(d.title.as_deref(), Some(evil));
        assert_eq!(d.description.as_deref(), Some(evil));
        assert_eq!(d.devices.disk.len(), 1);
        assert_eq!(d.devices.disk[0].kind, "network");
        assert_eq!(xml.matches("<devices>").count(), 1);
    }

    #[test]
    fn templates_are_checked() {
        check_template(TEMPLATE).unwrap();
        check_template("<domain/>").unwrap();
        check_template("<domain><features/></domain>").unwrap();
        let bad = [
            ("<domain><features></domain>", "well-formed"),
            ("<vm/>", "root element"),
            ("<domain><name>x</name></domain>", "<name> is managed"),
            ("<domain><memory>1</memory></domain>", "<memory> is managed"),
            (
                "<domain><devices><disk type='file'/></devices></domain>",
                "devices/disk",
            ),
            (
                "<domain><devices><serial type='pty'/></devices></domain>",
                "devices/serial",
            ),
            ("<!DOCTYPE x><domain/>", "DOCTYPE"),
            ("", "root element"),
        ];
        for (t, want) in bad {
            let e = check_template(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn shipped_templates_are_valid() {
        for f in ["linux.xml", "windows.xml"] {
            let p = format!("{}/domain-templates/{f}", env!("CARGO_MANIFEST_DIR"));
            let t = std::fs::read_to_string(&p).unwrap();
            check_template(&t).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
}
