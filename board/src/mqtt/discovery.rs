//! Home Assistant MQTT discovery: the config topics and payloads of one board.
//!
//! One device per board (`clip_edge_<device>`): a sensor for the last label,
//! one for its score, and per reported label a binary sensor (on with a match,
//! off after `off_delay_s`) and a camera showing the label's last snapshot.
//! Availability follows `<prefix>/status`. Keys are Home Assistant's
//! documented full names, no abbreviations (see `docs/mqtt.md`).

use serde_json::{json, Value};

use crate::config::{Discovery, MqttConfig};

/// A label as one topic level and entity id: lower-case ASCII letters and
/// digits, anything else `_` (so `/`, `+` and `#` never reach a topic).
pub fn slug(label: &str) -> String {
    let s: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// The Home Assistant node id of a board: `clip_edge_<device>` (device names
/// are already letters, digits, `-` and `_`, what a node id may hold), so an
/// ACL can name it with the broker user `%u`.
pub fn node_id(cfg: &MqttConfig) -> String {
    format!("clip_edge_{}", cfg.device)
}

/// The subscription that finds this board's retained config topics (to remove stale ones).
pub fn filter(cfg: &MqttConfig, d: &Discovery) -> String {
    format!("{}/+/{}/+/config", d.prefix, node_id(cfg))
}

/// Every config topic with its payload, for `labels` (the labels that get a
/// binary sensor and a camera).
pub fn configs(cfg: &MqttConfig, d: &Discovery, model: &str, labels: &[String]) -> Vec<(String, Value)> {
    let node = node_id(cfg);
    let p = &cfg.prefix;
    let device = json!({
        "identifiers": [node],
        "name": format!("clip-edge {}", cfg.device),
        "manufacturer": "clip-edge",
        "model": model,
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let common = |name: &str, id: &str| {
        json!({
            "name": name,
            "unique_id": format!("{node}_{id}"),
            "device": device,
            "availability_topic": format!("{p}/status"),
            "payload_available": "online",
            "payload_not_available": "offline",
        })
    };
    let with = |mut base: Value, extra: Value| {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    };
    let topic = |component: &str, id: &str| format!("{}/{component}/{node}/{id}/config", d.prefix);
    let mut out = vec![
        (
            topic("sensor", "last_label"),
            with(
                common("Last label", "last_label"),
                json!({
                    "state_topic": format!("{p}/state"),
                    "value_template": "{{ value_json.label if value_json.label is not none else value_json.decision }}",
                    "json_attributes_topic": format!("{p}/state"),
                    "icon": "mdi:label-outline",
                }),
            ),
        ),
        (
            topic("sensor", "score"),
            with(
                common("Score", "score"),
                json!({
                    "state_topic": format!("{p}/state"),
                    "value_template": "{{ value_json.score }}",
                    "state_class": "measurement",
                }),
            ),
        ),
    ];
    for label in labels {
        let s = slug(label);
        out.push((
            topic("binary_sensor", &s),
            with(
                common(label, &s),
                json!({
                    "state_topic": format!("{p}/{s}/detected"),
                    "payload_on": "ON",
                    "off_delay": d.off_delay.as_secs(),
                }),
            ),
        ));
        let id = format!("{s}_snapshot");
        out.push((
            topic("camera", &id),
            with(common(&format!("{label} snapshot"), &id), json!({ "topic": format!("{p}/{s}/snapshot") })),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_single_topic_levels() {
        assert_eq!(slug("Our Van/2+#"), "our_van_2__");
        assert_eq!(slug(""), "_");
    }
}
