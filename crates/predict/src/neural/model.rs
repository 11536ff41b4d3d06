//! A trained model on disk: `model.safetensors` (the weights) and `config.json` (format
//! version, architecture, vocabulary, calibration temperature, what it was trained on, and the
//! weights file's BLAKE3 so a mismatched pair is refused).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::features::{Vocab, VocabLimits};
use super::kernel::{Kernel, ShapeError};
use super::net::{Arch, Dims};

/// `format` of a model config.
pub const FORMAT: &str = "prewarm-model";
/// The config format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Weights file name.
pub const WEIGHTS: &str = "model.safetensors";
/// Config file name.
pub const CONFIG: &str = "config.json";

/// What a model was trained on and how; stored for people and for `eval`'s leak check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainingSummary {
    /// Records trained on (validation included).
    pub records: u64,
    /// Of which the later ones held back for validation.
    pub validation_records: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Distinct resources read.
    pub resources: u64,
    /// Time of the first and of the last record trained on (Unix seconds).
    pub first_ts: f64,
    /// The model has seen nothing after this time.
    pub last_ts: f64,
    /// Epochs run, and the one whose weights were kept.
    pub epochs: u32,
    /// Epoch of the kept weights (1-based).
    pub best_epoch: u32,
    /// Validation loss (cross-entropy, nats) of the kept weights, before calibration.
    pub validation_loss: f64,
    /// Executions in the calibration sample (at most 20,000, evenly spread over validation).
    pub calibration_sample: u64,
    /// Loss on the calibration sample before calibration.
    pub sample_loss: f64,
    /// Loss on the calibration sample after temperature calibration.
    pub calibrated_loss: f64,
    /// Top-1 accuracy on the calibration sample.
    pub validation_top1: f64,
    /// Top-5 accuracy on the calibration sample.
    pub validation_top5: f64,
    /// Random seed.
    pub seed: u64,
    /// Sequence length of training windows.
    pub seq_len: usize,
    /// Windows per batch.
    pub batch: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Vocabulary limits used.
    pub vocab_limits: VocabLimits,
    /// Horizon of the soft target, seconds, and its share of the target.
    pub horizon_s: f64,
    /// Share of the target spread over the horizon's reads.
    pub horizon_weight: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Training steps per second (all epochs).
    pub steps_per_s: f64,
}

/// A model config (`config.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the build that wrote it.
    pub format_version: u32,
    /// Architecture and sizes.
    pub arch: Arch,
    /// Token-space sizes.
    pub dims: Dims,
    /// Vocabulary.
    pub vocab: Vocab,
    /// Logits are divided by this before the softmax (fitted on validation data).
    pub temperature: f64,
    /// BLAKE3 of the weights file, hex.
    pub weights_blake3: String,
    /// Training summary.
    pub training: TrainingSummary,
}

/// Loading a model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model directory is missing.
    #[error(
        "{0}: missing (a model directory holds {CONFIG} and {WEIGHTS}, written by `prewarm train`)"
    )]
    Missing(PathBuf),
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config is not valid.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// The weights file is damaged, from another training run, or does not fit the config.
    #[error("{path}: {msg}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
}

/// A loaded model: config plus inference kernel.
pub struct Model {
    /// The config.
    pub config: ModelConfig,
    /// The weights, ready for one-step inference.
    pub kernel: Kernel,
    /// The weights as candle tensors (for the reference graph and re-saving).
    pub tensors: HashMap<String, Tensor>,
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing(path.to_owned()),
        _ => ModelError::Io {
            path: path.to_owned(),
            source: e,
        },
    })
}

impl Model {
    /// Builds a model from its parts, checking they fit.
    pub fn new(config: ModelConfig, tensors: HashMap<String, Tensor>) -> Result<Self, ShapeError> {
        let kernel = Kernel::new(config.arch, config.dims, &tensors)?;
        Ok(Self {
            config,
            kernel,
            tensors,
        })
    }

    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let cpath = dir.join(CONFIG);
        let wpath = dir.join(WEIGHTS);
        let bad = |msg: String| ModelError::Config {
            path: cpath.clone(),
            msg,
        };
        let raw = read(&cpath)?;
        // Check the format before the schema, so an old or foreign file says what it is.
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("not JSON: {e}")))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(bad(format!(
                "not a prewarm model config (no \"format\": \"{FORMAT}\")"
            )));
        }
        let fv = v.get("format_version").and_then(serde_json::Value::as_u64);
        if fv != Some(u64::from(FORMAT_VERSION)) {
            return Err(bad(format!(
                "format version {fv:?}; this build reads version {FORMAT_VERSION} (retrain with `prewarm train`)"
            )));
        }
        let mut config: ModelConfig =
            serde_json::from_value(v).map_err(|e| bad(format!("invalid: {e}")))?;
        config.arch.validate().map_err(bad)?;
        config.vocab.reindex();
        let expect = Dims {
            resources: config.vocab.resource_tokens(),
            types: config.vocab.type_tokens(),
            keys: config.vocab.key_tokens(),
        };
        if expect != config.dims {
            return Err(bad(format!(
                "vocabulary mismatch: the vocabulary has {expect:?} tokens, dims say {:?}",
                config.dims
            )));
        }
        if !(config.temperature.is_finite() && config.temperature > 0.0) {
            return Err(bad(format!("invalid temperature {}", config.temperature)));
        }
        let bytes = read(&wpath)?;
        let werr = |msg: String| ModelError::Weights {
            path: wpath.clone(),
            msg,
        };
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if hash != config.weights_blake3 {
            return Err(werr(format!(
                "BLAKE3 {hash} is not the {} the config names: damaged, or from another training run",
                config.weights_blake3
            )));
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| werr(format!("not a safetensors file: {e}")))?;
        Self::new(config, tensors).map_err(|e| werr(e.to_string()))
    }

    /// Writes the model to `dir` (created if missing): weights first, then the config that
    /// names them, each through a temporary file and a rename.
    pub fn save(&mut self, dir: &Path) -> Result<(), ModelError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ModelError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let wpath = dir.join(WEIGHTS);
        let wtmp = dir.join(format!(".{WEIGHTS}.tmp"));
        candle_core::safetensors::save(&self.tensors, &wtmp).map_err(|e| ModelError::Weights {
            path: wtmp.clone(),
            msg: e.to_string(),
        })?;
        let bytes = std::fs::read(&wtmp).map_err(io(&wtmp))?;
        self.config.weights_blake3 = blake3::hash(&bytes).to_hex().to_string();
        let cpath = dir.join(CONFIG);
        let ctmp = dir.join(format!(".{CONFIG}.tmp"));
        let json = serde_json::to_vec_pretty(&self.config).map_err(|e| ModelError::Config {
            path: cpath.clone(),
            msg: e.to_string(),
        })?;
        std::fs::write(&ctmp, json).map_err(io(&ctmp))?;
        std::fs::rename(&wtmp, &wpath).map_err(io(&wpath))?;
        std::fs::rename(&ctmp, &cpath).map_err(io(&cpath))?;
        Ok(())
    }
}
