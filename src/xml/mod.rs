//! Typed libvirt XML. Never built with format! or string templates: device elements are
//! structs serialised by quick-xml, domains are an operator's template streamed through quick-xml
//! with the managed elements inserted as events. Both escape every value.

pub mod devices;
pub mod domain;
pub mod templates;
