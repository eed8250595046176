//! The BERT encoder, written for inference over a pass of padded rows: the same weights and
//! the same arithmetic as candle-transformers' `BertModel` (which embedq used before), arranged
//! so the work lands in large matrix multiplications, on candle's tensors and kernels.
//!
//! What differs from candle-transformers 0.11, and why:
//! - every dense layer multiplies the whole pass at once, `(tokens, in) · (in, out)`: candle-nn's
//!   `Linear` on a 3-D input makes a batched product of `rows` small matrices, which the GEMM
//!   splits over too few rows to keep both cores busy;
//! - the dense layers, the embeddings and the layer norms see only the real tokens; padding
//!   exists only inside attention (gathered in, gathered out), so a pass of mixed lengths
//!   computes little for its padding;
//! - the query, key and value projections are one product with their weights side by side;
//! - the attention scale (1/√64, a power of two, so exact) is folded into the query weights;
//! - softmax is candle-nn's fused last-dimension kernel instead of five element-wise passes;
//! - GELU's `erf` is a rational approximation that compiles to vector instructions
//!   ([`fast_erf`], within 5e-7 of `erf`), not candle's scalar `erf`, which took a sixth of a
//!   pass's time.
//!
//! The results match `BertModel`'s to float rounding: `tests/local_model.rs` holds them to an
//! independent numpy implementation within 1e-5.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use rayon::prelude::*;
use serde::Deserialize;

/// What `config.json` says of the model's shape (Hugging Face's `BertConfig`; other fields are
/// ignored).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

/// A dense layer applied to a 2-D input: `x · wᵀ + b`.
struct Dense {
    /// `(out, in)`, as stored; multiplied transposed (a view, not a copy).
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: &VarBuilder, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((outputs, inputs), "weight")?,
            bias: vb.get(outputs, "bias")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        eps,
    ))
}

struct Layer {
    /// Query (scaled), key and value projections side by side: `(3 × hidden, hidden)`.
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

pub(crate) struct Encoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
    hidden: usize,
}

impl Encoder {
    /// Loads the weights of a sentence-transformers BERT checkpoint (with or without the
    /// `bert.` prefix).
    pub(crate) fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        if config.hidden_act != "gelu" {
            candle_core::bail!(
                "hidden_act {:?}: only GELU (erf) BERT models are supported",
                config.hidden_act
            );
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            candle_core::bail!(
                "{} attention heads do not divide the hidden size {}",
                config.num_attention_heads,
                config.hidden_size
            );
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let hidden = config.hidden_size;
        let heads = config.num_attention_heads;
        let head_size = hidden / heads;
        let eps = config.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let embedding = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(
                emb.pp(name).get((rows, hidden), "weight")?,
                hidden,
            ))
        };
        let word_embeddings = embedding("word_embeddings", config.vocab_size)?;
        let position_embeddings = embedding("position_embeddings", config.max_position_embeddings)?;
        let token_type_embeddings = embedding("token_type_embeddings", config.type_vocab_size)?;
        let embeddings_norm = layer_norm(emb.pp("LayerNorm"), hidden, eps)?;
        let scale = 1.0 / (head_size as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let attention = l.pp("attention");
                let own = attention.pp("self");
                let query = Dense::load(&own.pp("query"), hidden, hidden)?;
                let key = Dense::load(&own.pp("key"), hidden, hidden)?;
                let value = Dense::load(&own.pp("value"), hidden, hidden)?;
                let qkv = Dense {
                    weight: Tensor::cat(&[(query.weight * scale)?, key.weight, value.weight], 0)?,
                    bias: Tensor::cat(&[(query.bias * scale)?, key.bias, value.bias], 0)?,
                };
                Ok(Layer {
                    qkv,
                    attention_out: Dense::load(&attention.pp("output.dense"), hidden, hidden)?,
                    attention_norm: layer_norm(attention.pp("output.LayerNorm"), hidden, eps)?,
                    intermediate: Dense::load(
                        &l.pp("intermediate.dense"),
                        hidden,
                        config.intermediate_size,
                    )?,
                    output: Dense::load(&l.pp("output.dense"), config.intermediate_size, hidden)?,
                    output_norm: layer_norm(l.pp("output.LayerNorm"), hidden, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            heads,
            head_size,
            hidden,
        })
    }

    /// The last hidden states, `(rows, length, hidden)`, of `ids` `(rows, length)`, each row
    /// `lengths[row]` real tokens followed by padding; token types are all 0. The values at
    /// padding positions are finite and meaningless (pooling weighs them zero).
    pub(crate) fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (rows, length) = ids.dims2()?;
        let device = ids.device();
        let layout = TokenLayout::new(lengths, length, device)?;
        // Only the real tokens go through the dense layers: gather them, in row order.
        let real_ids = ids.flatten_all()?.index_select(&layout.real, 0)?;
        let words = self.word_embeddings.forward(&real_ids)?;
        let types = self
            .token_type_embeddings
            .forward(&Tensor::zeros(1, DType::U32, device)?)?;
        let positions = self.position_embeddings.forward(&layout.positions)?;
        // The order of candle-transformers' sums: (word + type) + position.
        let embedded = (words.broadcast_add(&types)? + positions)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        // torch.finfo(f32).min where a key is padding, 0 where it is real: `(rows, 1, 1, length)`.
        let additive = layout
            .mask
            .affine(f32::MAX as f64, f32::MIN as f64)?
            .reshape((rows, 1, 1, length))?;
        for layer in &self.layers {
            hidden = self.layer(layer, &hidden, &additive, &layout, rows, length)?;
        }
        hidden
            .index_select(&layout.padded, 0)?
            .reshape((rows, length, self.hidden))
    }

    /// One layer over the real tokens, `(real tokens, hidden)`; attention alone works in the
    /// padded layout.
    fn layer(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        additive_mask: &Tensor,
        layout: &TokenLayout,
        rows: usize,
        length: usize,
    ) -> Result<Tensor> {
        let qkv = layer.qkv.forward(hidden)?.index_select(&layout.padded, 0)?;
        // (tokens, 3 × hidden) → three (rows, heads, length, head_size).
        let split = |part: usize| -> Result<Tensor> {
            qkv.narrow(1, part * self.hidden, self.hidden)?
                .reshape((rows, length, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (query, key, value) = (split(0)?, split(1)?, split(2)?);
        let scores = query.matmul(&key.t()?)?.broadcast_add(additive_mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&value)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows * length, self.hidden))?
            .index_select(&layout.real, 0)?;
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_out.forward(&context)? + hidden)?)?;
        let intermediate = layer
            .intermediate
            .forward(&attended)?
            .apply_op1_no_bwd(&Gelu)?;
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate)? + &attended)?)
    }
}

/// Where a pass's real tokens sit in its padded layout.
struct TokenLayout {
    /// For each real token, in row order, its index in the padded layout (`row × length + i`).
    real: Tensor,
    /// For each padded position, the index of its real token (a padding position points at
    /// its row's first token: finite, masked out).
    padded: Tensor,
    /// For each real token, its position in its row.
    positions: Tensor,
    /// `(rows, length)`: 1 for a real token, 0 for padding.
    mask: Tensor,
}

impl TokenLayout {
    fn new(lengths: &[usize], length: usize, device: &candle_core::Device) -> Result<Self> {
        let total: usize = lengths.iter().sum();
        let mut real = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut padded = Vec::with_capacity(lengths.len() * length);
        let mut mask = Vec::with_capacity(lengths.len() * length);
        for (row, &n) in lengths.iter().enumerate() {
            if n == 0 || n > length {
                candle_core::bail!("row {row} has {n} tokens in a pass of length {length}");
            }
            let first = real.len() as u32;
            for i in 0..length {
                if i < n {
                    padded.push(first + i as u32);
                    real.push((row * length + i) as u32);
                    positions.push(i as u32);
                    mask.push(1f32);
                } else {
                    padded.push(first);
                    mask.push(0f32);
                }
            }
        }
        Ok(Self {
            real: Tensor::from_vec(real, total, device)?,
            padded: Tensor::from_vec(padded, lengths.len() * length, device)?,
            positions: Tensor::from_vec(positions, total, device)?,
            mask: Tensor::from_vec(mask, (lengths.len(), length), device)?,
        })
    }
}

/// GELU, `x · (1 + erf(x / √2)) / 2`, with [`fast_erf`], over a contiguous f32 tensor, on the
/// current rayon pool (the lane's).
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-fast-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("gelu-fast-erf takes f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gelu-fast-erf takes a contiguous tensor");
        };
        let input = &data[start..end];
        let mut out = vec![0f32; input.len()];
        const CHUNK: usize = 16 * 1024;
        out.par_chunks_mut(CHUNK)
            .zip(input.par_chunks(CHUNK))
            .for_each(|(out, input)| {
                for (o, &x) in out.iter_mut().zip(input) {
                    *o = 0.5 * x * (1.0 + fast_erf(x * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `erf(x)` as a ratio of two polynomials on `[-4, 4]` (beyond, erf is ±1 in f32): the
/// approximation Eigen and XLA use for f32, within 5e-7 of `erf` everywhere. No branches and
/// no calls (plain multiply-adds: `mul_add` without the `fma` target feature is a call to
/// `fmaf`), so the loop above compiles to vector instructions.
#[inline(always)]
#[allow(clippy::excessive_precision)] // The coefficients as published.
pub(crate) fn fast_erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    let p = x2 * p - 2.10102402082508e-06;
    let p = x2 * p - 5.69250639462346e-05;
    let p = x2 * p - 7.34990630326855e-04;
    let p = x2 * p - 2.95459980854025e-03;
    let p = (x2 * p - 1.60960333262415e-02) * x;
    let q = x2 * -1.45660718464996e-05 - 2.13374055278905e-04;
    let q = x2 * q - 1.68282697438203e-03;
    let q = x2 * q - 7.37332916720468e-03;
    let q = x2 * q - 1.42647390514189e-02;
    p / q
}

#[cfg(test)]
mod tests {
    use super::fast_erf;

    /// Against libm's erf (in f64) on a dense grid over [-8, 8].
    #[test]
    fn fast_erf_is_within_5e_7_of_erf() {
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..=1_600_000 {
            let x = -8.0 + 16.0 * i as f64 / 1_600_000.0;
            let err = (fast_erf(x as f32) as f64 - libm_erf(x)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 5e-7, "error {} at x = {}", worst.0, worst.1);
        assert_eq!(fast_erf(0.0), 0.0);
        assert_eq!(fast_erf(-1.5), -fast_erf(1.5));
    }

    /// erf in f64 by its Maclaurin series (|x| < 3) or its continued fraction (beyond): exact
    /// to ~1e-15, far below what is checked.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let value = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(a) = exp(-a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + …)))).
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        value.copysign(x)
    }
}
