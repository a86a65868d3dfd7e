//! TensorBoard event files. Scalars go through tensorboard-rs; text, histograms and hparams are
//! built here as protos, because tensorboard-rs leaves `add_text`/`add_histogram`/`add_hparams`
//! unimplemented (they panic).

use protobuf::well_known_types::Value as PbValue;
use protobuf::{Message, RepeatedField};
use std::collections::BTreeMap;
use std::path::Path;
use tensorboard_proto::api::{Experiment, HParamInfo, MetricInfo, MetricName};
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionStartInfo};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary::{histogram_raw, scalar};
use tensorboard_rs::summary_writer::FileWriter;

pub struct Board {
    writer: FileWriter,
}

fn one_value(value: Summary_Value) -> Summary {
    let mut s = Summary::new();
    s.set_value(RepeatedField::from_vec(vec![value]));
    s
}

fn plugin_metadata(plugin: &str, content: Vec<u8>) -> SummaryMetadata {
    let mut data = SummaryMetadata_PluginData::new();
    data.set_plugin_name(plugin.to_string());
    data.set_content(content);
    let mut md = SummaryMetadata::new();
    md.set_plugin_data(data);
    md
}

/// Histogram buckets: `buckets` equal-width bins over [min, max]. Empty input gives None.
pub fn histogram_buckets(values: &[f64], buckets: usize) -> Option<(f64, f64, Vec<f64>, Vec<f64>)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let buckets = buckets.max(1);
    let width = if max > min { (max - min) / buckets as f64 } else { 1.0 };
    let limits: Vec<f64> = (1..=buckets)
        .map(|i| if i == buckets { max } else { min + width * i as f64 })
        .collect();
    let mut counts = vec![0.0; buckets];
    for v in &finite {
        let i = (((v - min) / width) as usize).min(buckets - 1);
        counts[i] += 1.0;
    }
    Some((min, max, limits, counts))
}

impl Board {
    pub fn new(dir: &Path) -> Self {
        Self {
            writer: FileWriter::new(dir),
        }
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: usize) {
        self.writer.add_summary(scalar(tag, value as f32), step);
    }

    /// Text as the TensorBoard text plugin expects: a string tensor tagged with plugin "text".
    pub fn text(&mut self, tag: &str, text: &str, step: usize) {
        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(1);
        let mut shape = TensorShapeProto::new();
        shape.set_dim(RepeatedField::from_vec(vec![dim]));
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(shape);
        tensor.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(plugin_metadata("text", vec![]));
        value.set_tensor(tensor);
        self.writer.add_summary(one_value(value), step);
    }

    pub fn histogram(&mut self, tag: &str, values: &[f64], step: usize) {
        let Some((min, max, limits, counts)) = histogram_buckets(values, 30) else {
            return;
        };
        let n = counts.iter().sum::<f64>();
        let finite = values.iter().filter(|v| v.is_finite());
        let sum: f64 = finite.clone().sum();
        let sum_sq: f64 = finite.map(|v| v * v).sum();
        self.writer
            .add_summary(histogram_raw(tag, min, max, n, sum, sum_sq, &limits, &counts), step);
    }

    /// Hyperparameters for the HParams dashboard: the experiment (which knobs and metrics exist)
    /// and this session's values.
    pub fn hparams(&mut self, hparams: &BTreeMap<String, HParamValue>, metrics: &[&str]) {
        let mut exp = Experiment::new();
        let infos: Vec<HParamInfo> = hparams
            .keys()
            .map(|k| {
                let mut i = HParamInfo::new();
                i.set_name(k.clone());
                i
            })
            .collect();
        exp.set_hparam_infos(RepeatedField::from_vec(infos));
        let metric_infos: Vec<MetricInfo> = metrics
            .iter()
            .map(|m| {
                let mut name = MetricName::new();
                name.set_tag(m.to_string());
                let mut i = MetricInfo::new();
                i.set_name(name);
                i
            })
            .collect();
        exp.set_metric_infos(RepeatedField::from_vec(metric_infos));
        let mut exp_data = HParamsPluginData::new();
        exp_data.set_experiment(exp);
        self.hparams_summary("_hparams_/experiment", exp_data);

        let mut start = SessionStartInfo::new();
        for (k, v) in hparams {
            let mut pv = PbValue::new();
            match v {
                HParamValue::Number(x) => pv.set_number_value(*x),
                HParamValue::Text(s) => pv.set_string_value(s.clone()),
                HParamValue::Bool(b) => pv.set_bool_value(*b),
            }
            start.mut_hparams().insert(k.clone(), pv);
        }
        start.set_start_time_secs(chrono::Utc::now().timestamp() as f64);
        let mut start_data = HParamsPluginData::new();
        start_data.set_session_start_info(start);
        self.hparams_summary("_hparams_/session_start_info", start_data);
    }

    fn hparams_summary(&mut self, tag: &str, data: HParamsPluginData) {
        let mut data = data;
        data.set_version(0);
        let content = data.write_to_bytes().unwrap_or_default();
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(plugin_metadata("hparams", content));
        // The hparams plugin reads only the metadata; an empty tensor keeps readers that expect one happy.
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_FLOAT);
        tensor.set_tensor_shape(TensorShapeProto::new());
        tensor.set_float_val(vec![0.0]);
        value.set_tensor(tensor);
        self.writer.add_summary(one_value(value), 0);
    }

    pub fn flush(&mut self) {
        self.writer.flush();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

#[cfg(test)]
mod tests {
    use super::histogram_buckets;

    #[test]
    fn buckets_count_every_finite_value() {
        let (min, max, limits, counts) = histogram_buckets(&[0.0, 1.0, 2.0, 3.0, f64::NAN], 3).unwrap();
        assert_eq!((min, max), (0.0, 3.0));
        assert_eq!(limits, vec![1.0, 2.0, 3.0]);
        assert_eq!(counts, vec![1.0, 1.0, 2.0]);
        assert!(histogram_buckets(&[], 3).is_none());
        let (_, _, _, c) = histogram_buckets(&[5.0, 5.0], 4).unwrap();
        assert_eq!(c.iter().sum::<f64>(), 2.0);
    }
}
