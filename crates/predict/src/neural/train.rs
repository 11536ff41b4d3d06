//! Training: per-key sequences cut into windows, AdamW on cross-entropy of each execution's
//! first read, a time-ordered validation split (the latest records; never shuffled into the
//! past), early stopping on validation loss keeping the best epoch's weights, gradient-norm
//! clipping, and a softmax temperature fitted on validation data so probabilities are
//! calibrated. Everything random comes from one seed, so a run is reproducible.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use prewarm_core::HistoryRecord;

use super::features::{
    Encoded, HINTS, HORIZON_TARGETS, NONE, STEP_TOKENS, Vocab, VocabLimits, encode,
};
use super::model::{FORMAT, FORMAT_VERSION, Model, ModelConfig, TrainingSummary};
use super::net::{Arch, Batch, Dims, Net, loss_at, rows_at, soft_loss_at, tempered_loss};

/// Training options.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Architecture and size.
    pub arch: Arch,
    /// Vocabulary limits.
    pub limits: VocabLimits,
    /// Steps per training window.
    pub seq_len: usize,
    /// Windows per batch; 0 picks one that gives every epoch at least ~100 optimiser steps
    /// (between 8 and 64).
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// At most this many epochs.
    pub max_epochs: u32,
    /// Stop after this many epochs without a better validation loss.
    pub patience: u32,
    /// Share of the records (the latest) held back for validation.
    pub validation: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Start no new epoch that would likely end after this much time (minus a reserve for
    /// calibration and saving).
    pub time_budget: Option<Duration>,
    /// Look-ahead of the horizon target, seconds.
    pub horizon_s: f64,
    /// Share of each step's target spread over what its key reads within the horizon (the
    /// rest is the next read): 0 trains for the next read only.
    pub horizon_weight: f64,
}

impl TrainOptions {
    /// Defaults for an architecture.
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            limits: VocabLimits::default(),
            seq_len: match arch {
                Arch::Gru { .. } => 32,
                Arch::Transformer { window, .. } => 2 * window,
            },
            batch: 0,
            lr: match arch {
                Arch::Gru { .. } => 3e-3,
                Arch::Transformer { .. } => 3e-3,
            },
            max_epochs: 20,
            patience: 2,
            validation: 0.1,
            seed: 1,
            time_budget: Some(Duration::from_secs(300)),
            horizon_s: 60.0,
            horizon_weight: 0.5,
        }
    }
}

/// Where training is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Current epoch (1-based).
    pub epoch: u32,
    /// Maximum epochs.
    pub epochs: u32,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
    /// Mean training loss of this epoch so far.
    pub loss: f64,
    /// Training steps (executions) per second, this epoch.
    pub steps_per_s: f64,
    /// Validation loss, once the epoch is over.
    pub validation_loss: Option<f64>,
}

/// Training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Nothing to train on.
    #[error("the history is empty")]
    Empty,
    /// No record reads a resource, so there is nothing to predict.
    #[error("no record reads a resource: nothing to learn to predict")]
    NoReads,
    /// Records are not in time order.
    #[error("records are out of time order at record {0} (import sorts them)")]
    OutOfOrder(usize),
    /// An option is out of range.
    #[error("{0}")]
    BadOption(String),
    /// The loss became NaN or infinite.
    #[error("training diverged in epoch {0} (loss is not finite); try a lower learning rate")]
    Diverged(u32),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// SplitMix64: small, seedable, good enough for initialisation and shuffling.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Seeded initialisation (candle's CPU generator cannot be seeded): layer-norm gains 1,
/// biases 0, embeddings uniform ±0.1, matrices uniform ±1/√fan-in.
pub(crate) fn init_weights(vm: &VarMap, seed: u64) -> Result<(), TrainError> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| TrainError::BadOption("weights lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let is_ln = name.contains(".ln") || name.starts_with("ln_");
        let v: Vec<f32> = if name.ends_with("bias")
            || name.ends_with("bias_ih_l0")
            || name.ends_with("bias_hh_l0")
        {
            vec![0.0; n]
        } else if is_ln {
            vec![1.0; n]
        } else {
            let bound = if name.starts_with("emb.") {
                0.1
            } else {
                1.0 / (*shape.dims().last().unwrap_or(&1) as f32).sqrt()
            };
            (0..n).map(|_| rng.symmetric() * bound).collect()
        };
        var.set(&Tensor::from_vec(v, shape, &Device::Cpu)?)?;
    }
    Ok(())
}

/// Validation executions needed before a softmax temperature is fitted on them.
const MIN_CALIBRATION: usize = 200;
/// At most this many validation executions are used to calibrate and report accuracy.
const CALIBRATION_SAMPLE: usize = 20_000;

/// A training window: record indexes of one key, in order.
type Window = Vec<usize>;

/// Tensors of a batch of windows, plus which positions are scored.
struct Prepared {
    batch: Batch,
    /// Scored training positions, their next-read targets, horizon targets and weights.
    train: Option<(Tensor, Tensor, Tensor, Tensor)>,
    val: Option<(Tensor, Tensor, usize)>,
}

fn prepare(
    enc: &Encoded,
    wins: &[&Window],
    split: usize,
    horizon_weight: f64,
) -> Result<Prepared, TrainError> {
    let t = wins.iter().map(|w| w.len()).max().unwrap_or(1);
    let n = wins.len() * t;
    let mut f: [Vec<u32>; STEP_TOKENS] = std::array::from_fn(|_| vec![0u32; n]);
    let mut hints = vec![0u32; n * HINTS];
    let (mut ti, mut tt, mut vi, mut vt) = (vec![], vec![], vec![], vec![]);
    let (mut ht, mut hw) = (vec![], vec![]);
    for (b, w) in wins.iter().enumerate() {
        for (j, &r) in w.iter().enumerate() {
            let p = b * t + j;
            let s = &enc.steps[r];
            for (col, v) in f.iter_mut().zip(s.tokens()) {
                col[p] = v;
            }
            hints[p * HINTS..(p + 1) * HINTS].copy_from_slice(&s.hints);
            let target = enc.targets[r];
            if target != NONE {
                if r < split {
                    ti.push(p as u32);
                    tt.push(target);
                    let h = &enc.horizon[r];
                    let m = h.iter().filter(|&&x| x != NONE).count().max(1) as f64;
                    for (k, &x) in h.iter().enumerate() {
                        ht.push(x);
                        let share = if x == NONE { 0.0 } else { horizon_weight / m };
                        let own = if k == 0 { 1.0 - horizon_weight } else { 0.0 };
                        hw.push((share + own) as f32);
                    }
                } else {
                    vi.push(p as u32);
                    vt.push(target);
                }
            }
        }
    }
    let dev = &Device::Cpu;
    let tensor = |v: Vec<u32>| Tensor::from_vec(v, (wins.len(), t), dev);
    let [
        kind,
        key,
        gap,
        prev_read,
        prev_write,
        prev_duration,
        confidence,
    ] = f;
    let pair = |i: Vec<u32>, t: Vec<u32>| -> Result<Option<(Tensor, Tensor)>, TrainError> {
        if i.is_empty() {
            return Ok(None);
        }
        let len = i.len();
        Ok(Some((
            Tensor::from_vec(i, len, dev)?,
            Tensor::from_vec(t, len, dev)?,
        )))
    };
    let vn = vi.len();
    let train = match pair(ti, tt)? {
        None => None,
        Some((i, t)) => {
            let n = ht.len() / HORIZON_TARGETS;
            Some((
                i,
                t,
                Tensor::from_vec(ht, (n, HORIZON_TARGETS), dev)?,
                Tensor::from_vec(hw, (n, HORIZON_TARGETS), dev)?,
            ))
        }
    };
    Ok(Prepared {
        batch: Batch {
            kind: tensor(kind)?,
            key: tensor(key)?,
            gap: tensor(gap)?,
            prev_read: tensor(prev_read)?,
            prev_write: tensor(prev_write)?,
            prev_duration: tensor(prev_duration)?,
            hints: Tensor::from_vec(hints, (wins.len(), t, HINTS), dev)?,
            confidence: tensor(confidence)?,
        },
        train,
        val: pair(vi, vt)?.map(|(a, b)| (a, b, vn)),
    })
}

fn clip_gradients(
    vars: &[Var],
    grads: &mut candle_core::backprop::GradStore,
    max: f64,
) -> Result<(), TrainError> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sq.sqrt();
    if norm > max {
        let scale = max / norm;
        for v in vars {
            if let Some(g) = grads.get(v) {
                let g = (g * scale)?;
                grads.insert(v, g);
            }
        }
    }
    Ok(())
}

fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>, TrainError> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| TrainError::BadOption("weights lock poisoned".into()))?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

/// Trains a model on time-ordered records. `progress` is called after every batch and at the
/// end of every epoch.
pub fn train(
    records: &[HistoryRecord],
    o: &TrainOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Model, TrainError> {
    let started = Instant::now();
    check_inputs(records, o)?;
    let split = records.len() - ((records.len() as f64) * o.validation).round() as usize;
    let split = split.max(1);
    let vocab = Vocab::build(&records[..split], o.limits);
    let dims = Dims {
        resources: vocab.resource_tokens(),
        types: vocab.type_tokens(),
        keys: vocab.key_tokens(),
    };
    if !(0.0..=1.0).contains(&o.horizon_weight) || o.horizon_s.is_nan() || o.horizon_s < 0.0 {
        return Err(TrainError::BadOption(format!(
            "horizon weight must be in [0, 1] and horizon non-negative (got {}, {})",
            o.horizon_weight, o.horizon_s
        )));
    }
    let enc = encode(&vocab, records, o.horizon_s);
    let windows: Vec<Window> = enc
        .sequences
        .iter()
        .flat_map(|s| s.chunks(o.seq_len).map(<[usize]>::to_vec))
        .collect();
    let mut rng = Rng::new(o.seed.wrapping_add(1));
    let (mut train_w, mut val_w) = scored_windows(&enc, &windows, split)?;
    let batch = if o.batch == 0 {
        (train_w.len() / 100).clamp(8, 64)
    } else {
        o.batch
    };
    // Batches of windows of similar length, so short sequences are not padded to long ones;
    // the order within a length is shuffled once, the order of batches every epoch.
    rng.shuffle(&mut train_w);
    train_w.sort_by_key(|w| w.len());
    val_w.sort_by_key(|w| w.len());
    let mut train_batches: Vec<&[&Window]> = train_w.chunks(batch).collect();
    let val_batches: Vec<Prepared> = val_w
        .chunks(batch)
        .map(|c| prepare(&enc, c, split, o.horizon_weight))
        .collect::<Result<_, _>>()?;

    let mut fitting = Fitting::new(o, dims, &enc, split, &val_batches)?;
    let fitted = fitting.run(&mut train_batches, &mut rng, started, progress)?;
    fitting.restore(&fitted.best)?;
    let cal = calibrate(&fitting.net, &val_batches, fitted.best_loss)?;
    let config = ModelConfig {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        arch: o.arch,
        dims,
        vocab,
        temperature: cal.temperature,
        weights_blake3: String::new(),
        training: training_summary(records, o, split, batch, &fitted, &cal, started),
    };
    Model::new(config, fitted.best).map_err(|e| TrainError::BadOption(e.to_string()))
}

/// Rejects an empty or unordered history, one without reads, and out-of-range options.
fn check_inputs(records: &[HistoryRecord], o: &TrainOptions) -> Result<(), TrainError> {
    o.arch.validate().map_err(TrainError::BadOption)?;
    if records.is_empty() {
        return Err(TrainError::Empty);
    }
    if let Some(i) = records
        .windows(2)
        .position(|w| w[1].ts < w[0].ts || w[1].ts.is_nan())
    {
        return Err(TrainError::OutOfOrder(i + 2));
    }
    if !(0.0..0.9).contains(&o.validation) || o.seq_len == 0 || o.max_epochs == 0 {
        return Err(TrainError::BadOption(format!(
            "validation share must be in [0, 0.9) and sequence length, batch and epochs positive (got {}, {}, {}, {})",
            o.validation, o.seq_len, o.batch, o.max_epochs
        )));
    }
    if !records.iter().any(|r| !r.reads.is_empty()) {
        return Err(TrainError::NoReads);
    }
    Ok(())
}

/// The windows with a scored training position and those with a scored validation one
/// (records from `split` on); no training window is an error.
fn scored_windows<'w>(
    enc: &Encoded,
    windows: &'w [Window],
    split: usize,
) -> Result<(Vec<&'w Window>, Vec<&'w Window>), TrainError> {
    let scored = |w: &Window, val: bool| {
        w.iter()
            .any(|&r| enc.targets[r] != NONE && (r >= split) == val)
    };
    let train_w: Vec<&Window> = windows.iter().filter(|w| scored(w, false)).collect();
    let val_w: Vec<&Window> = windows.iter().filter(|w| scored(w, true)).collect();
    if train_w.is_empty() {
        return Err(TrainError::NoReads);
    }
    Ok((train_w, val_w))
}

/// The network, its optimiser and the data the epoch loop works through.
struct Fitting<'a> {
    o: &'a TrainOptions,
    enc: &'a Encoded,
    split: usize,
    val_batches: &'a [Prepared],
    vm: VarMap,
    net: Net,
    vars: Vec<Var>,
    opt: candle_nn::AdamW,
}

/// What the epoch loop ends with: the best epoch's weights and how training went.
struct Fitted {
    best: HashMap<String, Tensor>,
    best_epoch: u32,
    best_loss: f64,
    epochs: u32,
    total_steps: usize,
    train_loss_last: f64,
}

impl<'a> Fitting<'a> {
    /// Builds the network with seeded weights and its AdamW optimiser.
    fn new(
        o: &'a TrainOptions,
        dims: Dims,
        enc: &'a Encoded,
        split: usize,
        val_batches: &'a [Prepared],
    ) -> Result<Self, TrainError> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = Net::new(o.arch, dims, vb)?;
        init_weights(&vm, o.seed)?;
        let vars = vm.all_vars();
        let opt = candle_nn::AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: o.lr,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )?;
        Ok(Self {
            o,
            enc,
            split,
            val_batches,
            vm,
            net,
            vars,
            opt,
        })
    }

    /// Runs epochs until the budget, the epoch limit or the patience runs out, keeping the
    /// weights of the epoch with the best validation loss.
    fn run(
        &mut self,
        train_batches: &mut [&[&Window]],
        rng: &mut Rng,
        started: Instant,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Fitted, TrainError> {
        let o = self.o;
        let mut f = Fitted {
            best: snapshot(&self.vm)?,
            best_epoch: 0,
            best_loss: f64::INFINITY,
            epochs: 0,
            total_steps: 0,
            train_loss_last: f64::NAN,
        };
        let mut last_epoch = Duration::ZERO;
        let batches = train_batches.len();
        for epoch in 1..=o.max_epochs {
            if let Some(b) = o.time_budget {
                // The last epoch's length, plus a tenth of it for the final validation pass.
                if epoch > 1 && started.elapsed() + last_epoch + last_epoch / 10 > b {
                    break;
                }
            }
            let e0 = Instant::now();
            rng.shuffle(train_batches);
            let (sum, count, steps) = self.epoch(epoch, train_batches, e0, progress)?;
            f.total_steps += steps;
            f.epochs = epoch;
            f.train_loss_last = sum / count.max(1) as f64;
            // With no validation records, the training loss decides.
            let vl = self.validation_loss()?.unwrap_or(f.train_loss_last);
            last_epoch = e0.elapsed();
            progress(&Progress {
                epoch,
                epochs: o.max_epochs,
                batch: batches,
                batches,
                loss: f.train_loss_last,
                steps_per_s: steps as f64 / last_epoch.as_secs_f64().max(1e-9),
                validation_loss: Some(vl),
            });
            if vl < f.best_loss {
                (f.best, f.best_epoch, f.best_loss) = (snapshot(&self.vm)?, epoch, vl);
            } else if epoch - f.best_epoch >= o.patience {
                break;
            }
        }
        Ok(f)
    }

    /// One pass over the training batches (one optimiser step each): the summed loss, the
    /// batches stepped on and the executions seen.
    fn epoch(
        &mut self,
        epoch: u32,
        train_batches: &[&[&Window]],
        e0: Instant,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(f64, usize, usize), TrainError> {
        let batches = train_batches.len();
        let (mut sum, mut count, mut steps) = (0.0, 0usize, 0usize);
        for (bi, chunk) in train_batches.iter().enumerate() {
            let p = prepare(self.enc, chunk, self.split, self.o.horizon_weight)?;
            let Some((idx, _, ht, hw)) = &p.train else {
                continue;
            };
            let logits = self.net.forward(&p.batch)?;
            let loss = soft_loss_at(&logits, idx, ht, hw)?;
            let l = f64::from(loss.to_scalar::<f32>()?);
            if !l.is_finite() {
                return Err(TrainError::Diverged(epoch));
            }
            let mut grads = loss.backward()?;
            clip_gradients(&self.vars, &mut grads, 1.0)?;
            self.opt.step(&grads)?;
            sum += l;
            count += 1;
            steps += chunk.iter().map(|w| w.len()).sum::<usize>();
            progress(&Progress {
                epoch,
                epochs: self.o.max_epochs,
                batch: bi + 1,
                batches,
                loss: sum / count as f64,
                steps_per_s: steps as f64 / e0.elapsed().as_secs_f64().max(1e-9),
                validation_loss: None,
            });
        }
        Ok((sum, count, steps))
    }

    /// Mean loss over the validation executions, if there are any.
    fn validation_loss(&self) -> Result<Option<f64>, TrainError> {
        let (mut sum, mut n) = (0.0, 0usize);
        for p in self.val_batches {
            if let Some((idx, tg, c)) = &p.val {
                let logits = self.net.forward(&p.batch)?;
                sum += f64::from(loss_at(&logits, idx, tg)?.to_scalar::<f32>()?) * *c as f64;
                n += c;
            }
        }
        Ok((n > 0).then(|| sum / n as f64))
    }

    /// Puts the best weights back into the network.
    fn restore(&self, best: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        let data = self
            .vm
            .data()
            .lock()
            .map_err(|_| TrainError::BadOption("weights lock poisoned".into()))?;
        for (k, v) in data.iter() {
            if let Some(b) = best.get(k) {
                v.set(b)?;
            }
        }
        Ok(())
    }
}

/// The fitted softmax temperature and the validation scores of the calibration sample.
struct Calibration {
    temperature: f64,
    sample: usize,
    sample_loss: f64,
    calibrated: f64,
    top1: f64,
    top5: f64,
}

/// Calibrates and scores on an evenly spread sample of at most CALIBRATION_SAMPLE
/// validation executions: plenty for one scalar, and bounded in time and memory.
fn calibrate(
    net: &Net,
    val_batches: &[Prepared],
    best_loss: f64,
) -> Result<Calibration, TrainError> {
    let total_val: usize = val_batches
        .iter()
        .filter_map(|p| p.val.as_ref().map(|v| v.2))
        .sum();
    let stride = total_val.div_ceil(CALIBRATION_SAMPLE).max(1);
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for p in val_batches {
        if let Some((idx, tg, c)) = &p.val {
            let keep: Vec<u32> = (0..*c as u32).step_by(stride).collect();
            let keep = Tensor::from_vec(keep.clone(), keep.len(), &Device::Cpu)?;
            let idx = idx.index_select(&keep, 0)?;
            rows.push(rows_at(&net.forward(&p.batch)?, &idx)?.detach());
            targets.push(tg.index_select(&keep, 0)?);
        }
    }
    let sample: usize = rows.iter().map(|r| r.dim(0).unwrap_or(0)).sum();
    let (temperature, sample_loss, calibrated, top1, top5) = if rows.is_empty() {
        (1.0, best_loss, best_loss, f64::NAN, f64::NAN)
    } else {
        let rows = Tensor::cat(&rows, 0)?;
        let targets = Tensor::cat(&targets, 0)?;
        let at_one = tempered_loss(&rows, &targets, 1.0)?;
        let mut best_t = (1.0, at_one);
        // Fitting a temperature on a handful of executions fits noise: keep 1 then.
        let grid = if rows.dim(0)? >= MIN_CALIBRATION {
            29
        } else {
            0
        };
        for i in 0..grid {
            let temp = 0.2 + 0.1 * f64::from(i);
            let l = tempered_loss(&rows, &targets, temp)?;
            if l < best_t.1 {
                best_t = (temp, l);
            }
        }
        let (t1, t5) = top_k_accuracy(&rows, &targets)?;
        (best_t.0, at_one, best_t.1, t1, t5)
    };
    Ok(Calibration {
        temperature,
        sample,
        sample_loss,
        calibrated,
        top1,
        top5,
    })
}

/// What the model records about its training: the data, the options and the outcome.
fn training_summary(
    records: &[HistoryRecord],
    o: &TrainOptions,
    split: usize,
    batch: usize,
    f: &Fitted,
    cal: &Calibration,
    started: Instant,
) -> TrainingSummary {
    let keys: HashSet<&str> = records[..split]
        .iter()
        .map(|r| r.event.key.as_str())
        .collect();
    let resources: HashSet<&str> = records[..split]
        .iter()
        .flat_map(|r| r.reads.iter().map(|x| x.resource.as_str()))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    TrainingSummary {
        records: records.len() as u64,
        validation_records: (records.len() - split) as u64,
        keys: keys.len() as u64,
        resources: resources.len() as u64,
        first_ts: records[0].ts,
        last_ts: records[records.len() - 1].ts,
        epochs: f.epochs,
        best_epoch: f.best_epoch.max(1),
        validation_loss: if f.best_loss.is_finite() {
            f.best_loss
        } else {
            f.train_loss_last
        },
        calibration_sample: cal.sample as u64,
        sample_loss: cal.sample_loss,
        calibrated_loss: cal.calibrated,
        validation_top1: cal.top1,
        validation_top5: cal.top5,
        seed: o.seed,
        seq_len: o.seq_len,
        batch,
        learning_rate: o.lr,
        vocab_limits: o.limits,
        horizon_s: o.horizon_s,
        horizon_weight: o.horizon_weight,
        seconds,
        steps_per_s: f.total_steps as f64 / seconds.max(1e-9),
    }
}

fn top_k_accuracy(rows: &Tensor, targets: &Tensor) -> Result<(f64, f64), TrainError> {
    let rows: Vec<Vec<f32>> = rows.to_vec2()?;
    let targets: Vec<u32> = targets.to_vec1()?;
    let (mut h1, mut h5) = (0usize, 0usize);
    for (r, &t) in rows.iter().zip(&targets) {
        let v = r[t as usize];
        let better = r.iter().filter(|&&x| x > v).count();
        h1 += usize::from(better == 0);
        h5 += usize::from(better < 5);
    }
    let n = targets.len().max(1) as f64;
    Ok((h1 as f64 / n, h5 as f64 / n))
}

/// A model with seeded random weights and a vocabulary from `records`: for benchmarks of
/// inference speed, which does not depend on what the weights are.
pub fn untrained(records: &[HistoryRecord], arch: Arch, seed: u64) -> Result<Model, TrainError> {
    arch.validate().map_err(TrainError::BadOption)?;
    let vocab = Vocab::build(records, VocabLimits::default());
    let dims = Dims {
        resources: vocab.resource_tokens(),
        types: vocab.type_tokens(),
        keys: vocab.key_tokens(),
    };
    let vm = VarMap::new();
    Net::new(
        arch,
        dims,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )?;
    init_weights(&vm, seed)?;
    let config = ModelConfig {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        arch,
        dims,
        vocab,
        temperature: 1.0,
        weights_blake3: String::new(),
        training: TrainingSummary {
            records: 0,
            validation_records: 0,
            keys: 0,
            resources: 0,
            first_ts: 0.0,
            last_ts: 0.0,
            epochs: 0,
            best_epoch: 0,
            validation_loss: f64::NAN,
            calibration_sample: 0,
            sample_loss: f64::NAN,
            calibrated_loss: f64::NAN,
            validation_top1: f64::NAN,
            validation_top5: f64::NAN,
            seed,
            seq_len: 0,
            batch: 0,
            learning_rate: 0.0,
            vocab_limits: VocabLimits::default(),
            horizon_s: 0.0,
            horizon_weight: 0.0,
            seconds: 0.0,
            steps_per_s: 0.0,
        },
    };
    Model::new(config, snapshot(&vm)?).map_err(|e| TrainError::BadOption(e.to_string()))
}
