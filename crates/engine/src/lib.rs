//! prewarm's decision engine: pure (no IO, no runtime, time passed in), called the same way
//! by the coordinator, the replay simulator and the benchmarks, so a replay's numbers come
//! from production code.
//!
//! - [`engine`]: the [`Engine`] — an event's predictions → placement → priced prefetches and
//!   retention hints; completed executions → learning and hints;
//! - [`planner`]: which predicted states are worth moving, in seconds of cold start saved
//!   against what they displace, their lateness and their memory-time;
//! - [`placement`]: which capacity runs an event (among all holders, bounded load);
//! - [`cache`]: one capacity's eviction and keep-alive rules ([`CacheBook`]), which the agent
//!   and the simulator's caches both evict by;
//! - [`calibrate`]: the model's probabilities mapped to how often such predictions came true;
//! - [`nextuse`]: the next-use estimates (per-resource idle-time distributions) behind the
//!   `value` rule, the priced keep-alive and the planner's reuse term.

pub mod affinity;
pub mod cache;
pub mod calibrate;
pub mod engine;
pub mod evict;
pub mod homes;
pub mod nextuse;
pub mod nextuse_curve;
pub mod placement;
pub mod planner;
mod scoring;
pub mod spread;

pub use cache::{CacheBook, Expected, Hint, Rule};
pub use engine::{
    Catalog, Decided, Engine, EngineConfig, EventView, Fleet, HintFor, Holding, Keep, Observed,
    Prewarm, admits_id, model_free, rules_for,
};
pub use evict::{Candidate, Shortfall, choose_victims};
pub use nextuse_curve::Curve;
pub use placement::{Holders, Loads, Placement, PlacementReason, place, place_within};
pub use planner::{Decision, LinkPrice, Planner, PlannerConfig, Target, Want};
