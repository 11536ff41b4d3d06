//! Decision settings — and, for the `auto` policy, the model — learned from a history's
//! warm-up part. Two of the engine's settings win on some workloads and lose on others (BENCHMARKS.md, "Link time priced by the queue" and
//! "Spreading"): pricing a prefetch's link time by the queue instead of as a cold start, and
//! offering each state just read to one more capacity. Which fits depends on the trace and
//! the cache size, so neither can be a fixed default, and prewarm may not be tuned by hand
//! to the traces it is judged on. The tuner learns them from the part of a history every
//! policy may learn from (the warm-up):
//!
//! 1. replay the warm-up part alone under each candidate (a model and a setting: the same
//!    engine and fleet; its first half warms caches and online learners, its second half is
//!    counted);
//! 2. compare each candidate with the given setting execution by execution: `gained` counts
//!    executions warm under the candidate and cold under the given setting, `lost` the
//!    reverse;
//! 3. switch only on evidence — McNemar's test: `gained − lost ≥ Z · √(gained + lost)` — and
//!    to the candidate that gained the most net; else keep the given setting;
//! 4. then, among the candidates of the chosen model that the warm-up cannot tell from the
//!    choice (its net advantage over them under one standard error, `√(discordant)`: the
//!    one-standard-error rule of model selection), take the one that moves the fewest
//!    bytes. Warm starts come first; bytes decide only what the evidence leaves open
//!    (BENCHMARKS.md, "Bytes within the noise").
//!
//! A short warm-up therefore changes nothing (too few discordant executions to pass the
//! test), which is the safe answer. A model trained for the trials must not have seen the
//! counted half (`prewarm replay` trains the trials' networks on the first half only): in
//! sample, its predictions look better than they will be later, which favours settings
//! that trust them.
//!
//! Choosing the model this way, by the warm starts it yields through the engine rather than
//! by its log-loss, matters: on Azure Functions 2019 the GRU has the lower validation
//! log-loss and the Transformer the higher warm-start rate, and a mixture weighted by any
//! predictive loss follows Markov there (BENCHMARKS.md, "Choosing the model by replay").
//! The coordinator takes the choice as flags (`--model`, `--link-price`, `--spread`);
//! `prewarm replay --tune` and the `auto` policy print them per cache size.

use prewarm_core::{HistoryRecord, Predictor};
use prewarm_engine::LinkPrice;
use prewarm_predict::neural::Model;
use prewarm_predict::neural::retrain::{RetrainConfig, RetrainError, Round, challenge_judged};
use serde::Serialize;

use crate::{Policy, PolicyKind, SimConfig, replay, replay_paired};

/// How many standard deviations of the discordant count a candidate's net gain must reach.
pub const Z: f64 = 2.0;

/// The settings the tuner chooses among.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Setting {
    /// How the link time of a prefetch nobody reads is priced.
    pub link_price: LinkPrice,
    /// Whether states just read are offered to one more capacity.
    pub spread: bool,
}

impl Setting {
    /// The setting `cfg` carries.
    pub fn of(cfg: &SimConfig) -> Self {
        Self {
            link_price: cfg.planner.link_price,
            spread: cfg.spread,
        }
    }

    /// `cfg` with this setting.
    pub fn apply(self, cfg: &SimConfig) -> SimConfig {
        let mut c = cfg.clone();
        c.planner.link_price = self.link_price;
        c.spread = self.spread;
        c
    }

    /// The flags that give this setting to `prewarm coordinator` (and `replay`).
    pub fn flags(&self) -> String {
        let mut s = format!("--link-price {}", self.link_price);
        if self.spread {
            s.push_str(" --spread");
        }
        s
    }

    /// The candidates tried against `base`: `base` first, then its link price swapped
    /// between a fixed price and the queue, spreading flipped, and both.
    pub fn candidates(base: Setting) -> Vec<Setting> {
        let other_price = match base.link_price {
            LinkPrice::Queue => LinkPrice::Fixed(1.0),
            LinkPrice::Fixed(_) => LinkPrice::Queue,
        };
        let mut out = Vec::with_capacity(4);
        for link_price in [base.link_price, other_price] {
            for spread in [base.spread, !base.spread] {
                out.push(Setting { link_price, spread });
            }
        }
        out
    }
}

/// One candidate replayed over the warm-up part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trial {
    /// The candidate's model (the policy it was built as).
    pub model: String,
    /// The candidate's setting.
    pub setting: Setting,
    /// Executions counted (the second half of the warm-up part).
    pub executions: u64,
    /// Of those, warm.
    pub warm: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Executions warm here and cold under the given setting.
    pub gained: u64,
    /// Executions cold here and warm under the given setting.
    pub lost: u64,
    /// Whether the warm-up could not tell it from the candidate chosen on warm starts (its
    /// net advantage under one standard error), so bytes could decide.
    pub tied: bool,
}

impl Trial {
    /// Whether the net gain passes McNemar's test at [`Z`].
    pub fn significant(&self) -> bool {
        let net = self.gained as f64 - self.lost as f64;
        net >= 1.0 && net >= Z * ((self.gained + self.lost) as f64).sqrt()
    }
}

/// What the tuner chose for one policy, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tuned {
    /// The policy.
    pub policy: String,
    /// Records in the warm-up part replayed.
    pub records: usize,
    /// The model chosen.
    pub model: String,
    /// The setting chosen.
    pub chosen: Setting,
    /// Every candidate, the first model with the given setting first.
    pub trials: Vec<Trial>,
    /// Whether the choice moves fewer bytes than the candidate best on warm starts, which
    /// the warm-up could not tell from it (step 4 of the module docs).
    pub by_bytes: bool,
    /// The rounds that re-learned the settings while the policy ran
    /// ([`crate::retune::Retuner`]; empty when it did not).
    pub rounds: Vec<crate::retune::Retuned>,
}

impl Tuned {
    /// Whether `t` is the candidate chosen.
    pub fn is_chosen(&self, t: &Trial) -> bool {
        t.setting == self.chosen && t.model == self.model
    }

    /// Whether the tuner kept the first model and the given setting.
    pub fn kept(&self) -> bool {
        self.trials.first().is_some_and(|t| self.is_chosen(t))
    }

    /// The flags that give the choice to `prewarm coordinator` (the model's only when the
    /// tuner chose among several).
    pub fn flags(&self) -> String {
        let models = self
            .trials
            .iter()
            .filter(|t| t.model != self.trials[0].model)
            .count();
        if models == 0 {
            self.chosen.flags()
        } else {
            format!("--model {} {}", self.model, self.chosen.flags())
        }
    }
}

/// Chooses, for the policy called `policy`, a model among `models` (built by `make`, once
/// per candidate) and a setting, by replaying `warmup`, the warm-up part of a history, under
/// each (see the module docs). `cfg` carries the given setting; the first model with it is
/// the one kept without evidence.
pub fn tune<E>(
    policy: &str,
    warmup: &[HistoryRecord],
    cfg: &SimConfig,
    models: &[&str],
    mut make: impl FnMut(&str) -> Result<Policy, E>,
) -> Result<Tuned, E> {
    let trial_cfg = SimConfig {
        warmup: 0.5,
        ..cfg.clone()
    };
    let base = Setting::of(cfg);
    let mut warms: Vec<Vec<bool>> = Vec::new();
    let mut trials = Vec::new();
    for model in models {
        for setting in Setting::candidates(base) {
            let mut p = make(model)?;
            p.retrainer = None;
            let (report, warm) = replay_paired(warmup, p, &setting.apply(&trial_cfg));
            let (gained, lost) = discordant(&warm, warms.first().unwrap_or(&warm));
            trials.push(Trial {
                model: (*model).to_owned(),
                setting,
                executions: report.executions,
                warm: report.warm,
                bytes: report.bytes,
                gained,
                lost,
                tied: false,
            });
            warms.push(warm);
        }
    }
    let best = trials
        .iter()
        .enumerate()
        .filter(|(_, t)| t.significant())
        .max_by_key(|(_, t)| t.gained as i64 - t.lost as i64)
        .map_or(0, |(i, _)| i);
    let chosen = cheapest_tied(&mut trials, &warms, best);
    let by_bytes = chosen != best;
    let (model, chosen) = trials.get(chosen).map_or_else(
        || (models.first().copied().unwrap_or(policy).to_owned(), base),
        |t| (t.model.clone(), t.setting),
    );
    Ok(Tuned {
        policy: policy.to_owned(),
        records: warmup.len(),
        model,
        chosen,
        trials,
        by_bytes,
        rounds: Vec::new(),
    })
}

/// Executions warm in `a` and cold in `b`, and the reverse.
fn discordant(a: &[bool], b: &[bool]) -> (u64, u64) {
    a.iter().zip(b).fold((0, 0), |(g, l), (x, y)| match (x, y) {
        (true, false) => (g + 1, l),
        (false, true) => (g, l + 1),
        _ => (g, l),
    })
}

/// Step 4 of the module docs: marks the candidates of `best`'s model that the warm-up cannot
/// tell from it and returns the index of the one moving the fewest bytes (`best` on ties).
fn cheapest_tied(trials: &mut [Trial], warms: &[Vec<bool>], best: usize) -> usize {
    let Some(model) = trials.get(best).map(|t| t.model.clone()) else {
        return best;
    };
    let mut chosen = best;
    for i in 0..trials.len() {
        let (ahead, behind) = discordant(&warms[best], &warms[i]);
        let net = ahead as f64 - behind as f64;
        let tied = trials[i].model == model && net < ((ahead + behind) as f64).sqrt().max(1.0);
        trials[i].tied = tied;
        if tied && trials[i].bytes < trials[chosen].bytes {
            chosen = i;
        }
    }
    chosen
}

/// The replay as a retraining round's judge (`prewarm_predict::neural::retrain::Judge`):
/// the share of a window's executions after its warm-up share that the model's decisions,
/// through the engine over a fleet set by `cfg`, started warm. The coordinator compares its
/// champion and challenger with it (`--retrain-judge replay`).
pub fn judge(
    cfg: SimConfig,
) -> impl Fn(Box<dyn Predictor>, &[HistoryRecord], f64) -> f64 + Send + Sync {
    move |model, records, warmup| {
        let c = SimConfig {
            warmup,
            ..cfg.clone()
        };
        replay(
            records,
            Policy::new("candidate", PolicyKind::Predictive(model)),
            &c,
        )
        .warm_rate
    }
}

/// One retraining round (the coordinator's and the replay's), champion and challenger judged
/// by a replay at `judge` when given ([`judge`]), by held-back log-loss otherwise.
pub fn challenge(
    champion: &Model,
    history: &[HistoryRecord],
    cfg: &RetrainConfig,
    judge_at: Option<SimConfig>,
) -> Result<(Round, Option<Model>), RetrainError> {
    let judge = judge_at.map(judge);
    let judge = judge
        .as_ref()
        .map(|j| j as &prewarm_predict::neural::retrain::Judge<'_>);
    challenge_judged(champion, history, cfg, judge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(gained: u64, lost: u64) -> Trial {
        Trial {
            model: "markov".into(),
            setting: Setting {
                link_price: LinkPrice::Queue,
                spread: false,
            },
            executions: 1000,
            warm: 500,
            bytes: 0,
            gained,
            lost,
            tied: false,
        }
    }

    #[test]
    fn bytes_decide_only_among_candidates_the_warm_up_cannot_tell_apart() {
        let mut t: Vec<Trial> = [(0, 900), (1, 100), (2, 500), (3, 50)]
            .iter()
            .map(|&(i, bytes)| Trial {
                bytes,
                model: if i == 3 {
                    "gru".into()
                } else {
                    "markov".into()
                },
                ..trial(0, 0)
            })
            .collect();
        // 100 executions; the best (0) is cold on 90..95. 1 loses 15 and gains 2 back (net 13
        // ≥ √17): told apart. 2 loses 3 and gains 3 (net 0): within the noise, and cheaper.
        // 3 would be cheaper still, but it is another model.
        let mut best = vec![true; 100];
        best[90..95].fill(false);
        let mut one = best.clone();
        one[..15].fill(false);
        one[90..92].fill(true);
        let mut two = best.clone();
        two[..3].fill(false);
        two[90..93].fill(true);
        let three = best.clone();
        let mut warms = vec![best, one, two, three];
        assert_eq!(cheapest_tied(&mut t, &warms, 0), 2);
        assert!(t[0].tied && !t[1].tied && t[2].tied && !t[3].tied);
        // Losing 8 against 3 gained (net 5 ≥ √11) is evidence: the best stays.
        warms[2][..8].fill(false);
        assert_eq!(cheapest_tied(&mut t, &warms, 0), 0);
    }

    #[test]
    fn a_gain_must_stand_out_of_the_discordant_noise() {
        // 2·√(30+10) = 12.6 < 20: significant; 2·√(60+50) = 21 > 10: not.
        assert!(trial(30, 10).significant());
        assert!(!trial(60, 50).significant());
        // Small counts never pass: 2·√3 = 3.5 > 3.
        assert!(!trial(3, 0).significant());
        assert!(trial(4, 0).significant());
        assert!(!trial(0, 0).significant());
    }

    #[test]
    fn the_candidates_start_with_the_given_setting_and_cover_both_levers() {
        let base = Setting {
            link_price: LinkPrice::Fixed(0.5),
            spread: false,
        };
        let c = Setting::candidates(base);
        assert_eq!(c[0], base);
        assert_eq!(c.len(), 4);
        assert!(
            c.iter()
                .any(|s| s.link_price == LinkPrice::Queue && s.spread)
        );
        assert!(
            c.iter()
                .all(|s| matches!(s.link_price, LinkPrice::Queue | LinkPrice::Fixed(0.5)))
        );
        assert_eq!(
            Setting {
                link_price: LinkPrice::Queue,
                spread: true
            }
            .flags(),
            "--link-price queue --spread"
        );
    }
}
