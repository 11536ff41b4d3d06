//! Reports for people: plain-text tables and human figures ([`text`]), and self-contained
//! HTML pages ([`html`]: inline SVG, no scripts, no network) — the replay's ([`replay`]) and
//! the demo's, which builds on [`html::chart`]. Every function takes plain data.

pub mod html;
pub mod replay;
pub mod text;

pub use replay::Replay;
