//! Configuration layering: service defaults < environment < node, later layers winning
//! key by key. Rendering turns the merged templates into one instance's environment.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::template::{self, TemplateContext, TemplateError};

/// A set of configuration keys and their values.
pub type ConfigMap = BTreeMap<String, String>;

/// Overlays `over` on `base`: every key of `over` wins.
pub fn layer(base: &ConfigMap, over: &ConfigMap) -> ConfigMap {
    let mut merged = base.clone();
    merged.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// Merges layers in order, lowest precedence first.
pub fn layered<'a>(layers: impl IntoIterator<Item = &'a ConfigMap>) -> ConfigMap {
    layers
        .into_iter()
        .fold(ConfigMap::new(), |acc, l| layer(&acc, l))
}

/// Renders every value of `config` for one instance and adds the variables wharf always
/// sets. wharf's own variables win over user keys of the same name, so an instance can
/// rely on them.
pub fn render_instance(
    config: &ConfigMap,
    context: &TemplateContext,
) -> Result<ConfigMap, (String, TemplateError)> {
    let mut rendered = ConfigMap::new();
    for (key, value) in config {
        let value = template::render(value, context).map_err(|e| (key.clone(), e))?;
        rendered.insert(key.clone(), value);
    }
    rendered.insert("WHARF_SERVICE".into(), context.service.clone());
    rendered.insert("WHARF_ENV".into(), context.env.clone());
    rendered.insert("WHARF_VERSION".into(), context.version.clone());
    rendered.insert("WHARF_INSTANCE".into(), context.instance.to_string());
    rendered.insert("WHARF_NODE".into(), context.node.clone());
    if let Some(port) = context.port {
        rendered.insert("PORT".into(), port.to_string());
    }
    for (name, port) in &context.ports {
        rendered.insert(port_variable(name), port.to_string());
    }
    Ok(rendered)
}

/// The variable naming one of an instance's other ports: `admin` is `PORT_ADMIN`.
pub fn port_variable(name: &str) -> String {
    format!("PORT_{}", name.to_ascii_uppercase())
}

/// A short, stable digest of rendered configuration, for history and change detection.
/// Each item is one map's entries (a `&ConfigMap`, or its entries filtered), so a
/// caller leaving secrets out need not copy the maps.
pub fn config_digest<'a, M>(configs: impl IntoIterator<Item = M>) -> String
where
    M: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut hasher = Sha256::new();
    for config in configs {
        for (k, v) in config {
            hasher.update(k.as_bytes());
            hasher.update([0]);
            hasher.update(v.as_bytes());
            hasher.update([0]);
        }
        hasher.update([1]);
    }
    format!("sha256:{}", hex::encode(&hasher.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> ConfigMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_beats_environment_beats_service() {
        let service = map(&[("LOG", "info"), ("GREETING", "hello"), ("A", "s")]);
        let env = map(&[("LOG", "debug"), ("A", "e")]);
        let node = map(&[("A", "n")]);
        let merged = layered([&service, &env, &node]);
        assert_eq!(
            merged,
            map(&[("LOG", "debug"), ("GREETING", "hello"), ("A", "n")])
        );
    }

    fn config_map() -> impl Strategy<Value = ConfigMap> {
        prop::collection::btree_map("[A-D]", "[a-z]{0,3}", 0..5)
    }

    proptest! {
        #[test]
        fn layering_is_associative(a in config_map(), b in config_map(), c in config_map()) {
            prop_assert_eq!(layer(&layer(&a, &b), &c), layer(&a, &layer(&b, &c)));
        }

        #[test]
        fn the_last_layer_always_wins(a in config_map(), b in config_map()) {
            let merged = layer(&a, &b);
            for (k, v) in &b {
                prop_assert_eq!(merged.get(k), Some(v));
            }
            for k in a.keys() {
                prop_assert!(merged.contains_key(k));
            }
        }

        #[test]
        fn digest_changes_with_any_value(a in config_map(), key in "[A-D]", value in "[a-z]{4}") {
            let mut b = a.clone();
            b.insert(key, value);
            prop_assert_eq!(a == b, config_digest([&a]) == config_digest([&b]));
        }
    }
}
