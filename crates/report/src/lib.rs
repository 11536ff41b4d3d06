//! Reports for people: plain-text tables and human figures ([`text`]), and self-contained
//! HTML pages ([`html`]: inline SVG, no scripts, no network) — the replay's ([`replay`]) and
//! the demo's, which builds on [`html::chart`]; a replay as terminal text ([`replay_text`]).
//! Every function takes plain data.

pub mod html;
pub mod replay;
pub mod replay_text;
pub mod text;

pub use replay::Replay;
